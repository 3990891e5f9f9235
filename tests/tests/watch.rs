//! Watch streams: the current state first, then every event in order with no
//! gap and no duplicate, across reconnects and across server processes.

use std::time::Duration;

use esaas_proto::v1 as pb;
use esaas_proto::v1::cluster_service_client::ClusterServiceClient;
use esaas_tests::*;
use tokio_stream::StreamExt;
use tonic::Streaming;

const WAIT: Duration = Duration::from_secs(10);

async fn watch(
    mut client: ClusterServiceClient<tonic::transport::Channel>,
    key: &str,
    name: &str,
    since: i64,
) -> (pb::Cluster, Streaming<pb::WatchClusterResponse>) {
    let mut stream = client
        .watch_cluster(authed(
            key,
            pb::WatchClusterRequest {
                name: name.into(),
                since_revision: since,
            },
        ))
        .await
        .expect("watch")
        .into_inner();
    let first = tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("first message in time");
    match first.expect("a first message").expect("ok").payload {
        Some(pb::watch_cluster_response::Payload::Cluster(c)) => (c, stream),
        other => panic!("the first message must be the cluster, got {other:?}"),
    }
}

async fn next_event(stream: &mut Streaming<pb::WatchClusterResponse>) -> pb::ClusterEvent {
    let msg = tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("an event in time")
        .expect("stream open")
        .expect("ok");
    match msg.payload {
        Some(pb::watch_cluster_response::Payload::Event(e)) => e,
        other => panic!("expected an event, got {other:?}"),
    }
}

fn resize(name: &str, nodes: i32) -> pb::UpdateClusterRequest {
    pb::UpdateClusterRequest {
        cluster: Some(pb::Cluster {
            name: name.into(),
            spec: Some(spec(nodes)),
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["spec.node_sets".into()],
        }),
        ..Default::default()
    }
}

#[tokio::test]
async fn state_first_then_every_event_in_order() {
    let app = spawn_app().await;
    let t = app.tenant("search").await;
    let name = app
        .create_cluster(&t.admin, "search", "logs", 3)
        .await
        .cluster
        .expect("c")
        .name;
    let (current, mut stream) = watch(app.clusters(), &t.viewer, &name, 0).await;
    assert_eq!(current.revision, 1);
    assert_eq!(
        current.status.as_ref().map(|s| s.state),
        Some(pb::ClusterState::Provisioning as i32)
    );

    app.clusters()
        .update_cluster(authed(&t.admin, resize(&name, 5)))
        .await
        .expect("update");
    app.clusters()
        .delete_cluster(authed(
            &t.admin,
            pb::DeleteClusterRequest {
                name: name.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect("delete");

    let e2 = next_event(&mut stream).await;
    assert_eq!(
        (e2.revision, e2.r#type),
        (2, pb::ClusterEventType::SpecUpdated as i32)
    );
    assert_eq!(e2.cluster_snapshot.as_ref().map(|c| c.generation), Some(2));
    let e3 = next_event(&mut stream).await;
    assert_eq!(
        (e3.revision, e3.r#type),
        (3, pb::ClusterEventType::DeleteRequested as i32)
    );
    assert_eq!(
        e3.cluster_snapshot.and_then(|c| c.status).map(|s| s.state),
        Some(pb::ClusterState::Deleting as i32)
    );
    assert!(!e3.operation.is_empty(), "the event names its operation");
}

#[tokio::test]
async fn a_reconnect_from_the_last_revision_misses_nothing() {
    let app = spawn_app().await;
    let t = app.tenant("search").await;
    let name = app
        .create_cluster(&t.admin, "search", "logs", 3)
        .await
        .cluster
        .expect("c")
        .name;
    let (_, mut stream) = watch(app.clusters(), &t.viewer, &name, 0).await;
    app.clusters()
        .update_cluster(authed(&t.admin, resize(&name, 4)))
        .await
        .expect("update");
    let seen = next_event(&mut stream).await.revision;
    assert_eq!(seen, 2);
    drop(stream); // the connection drops

    for n in 5..9 {
        app.clusters()
            .update_cluster(authed(&t.admin, resize(&name, n)))
            .await
            .expect("update");
    }
    let (current, mut stream) = watch(app.clusters(), &t.viewer, &name, seen).await;
    assert_eq!(current.revision, 6);
    for want in 3..=6 {
        let e = next_event(&mut stream).await;
        assert_eq!(e.revision, want, "no gap, no duplicate");
        assert_eq!(e.cluster_snapshot.map(|c| c.generation), Some(want));
    }
    // and live again after the replay
    app.clusters()
        .update_cluster(authed(&t.admin, resize(&name, 9)))
        .await
        .expect("update");
    assert_eq!(next_event(&mut stream).await.revision, 7);

    let err = app
        .clusters()
        .watch_cluster(authed(
            &t.viewer,
            pb::WatchClusterRequest {
                name: name.clone(),
                since_revision: 99,
            },
        ))
        .await
        .expect_err("ahead of the log");
    assert_eq!(violated_fields(&err), vec!["since_revision"]);
}

#[tokio::test]
async fn concurrent_writers_and_several_watchers_see_contiguous_revisions() {
    let app = spawn_app().await;
    let t = app.tenant("search").await;
    let name = app
        .create_cluster(&t.admin, "search", "logs", 3)
        .await
        .cluster
        .expect("c")
        .name;
    let mut watchers = Vec::new();
    for _ in 0..3 {
        watchers.push(watch(app.clusters(), &t.viewer, &name, 0).await.1);
    }
    let mut set = tokio::task::JoinSet::new();
    for n in 4..24 {
        let mut c = app.clusters();
        let (key, req) = (t.admin.clone(), resize(&name, n));
        set.spawn(async move { c.update_cluster(authed(&key, req)).await.map(|_| ()) });
    }
    while let Some(r) = set.join_next().await {
        r.expect("join").expect("update");
    }
    for mut w in watchers {
        for want in 2..=21 {
            assert_eq!(next_event(&mut w).await.revision, want);
        }
    }
}

#[tokio::test]
async fn a_change_through_one_server_process_reaches_a_watcher_on_another() {
    let db = TestDb::new().await;
    let a = ServerProcess::start(&db).await;
    let b = ServerProcess::start(&db).await;
    let ch_a = channel(a.addr).await;
    let ch_b = channel(b.addr).await;
    let mut admin = esaas_proto::v1::admin_service_client::AdminServiceClient::new(ch_b.clone());
    admin
        .create_tenant(authed(
            ADMIN_KEY,
            pb::CreateTenantRequest {
                tenant_id: "search".into(),
                ..Default::default()
            },
        ))
        .await
        .expect("tenant");
    let mut clusters_b = ClusterServiceClient::new(ch_b);
    let name = clusters_b
        .create_cluster(authed(ADMIN_KEY, create_request("search", "logs", 3)))
        .await
        .expect("create")
        .into_inner()
        .cluster
        .expect("c")
        .name;
    let (_, mut stream) = watch(ClusterServiceClient::new(ch_a), ADMIN_KEY, &name, 0).await;
    let sent = tokio::time::Instant::now();
    clusters_b
        .update_cluster(authed(ADMIN_KEY, resize(&name, 5)))
        .await
        .expect("update through b");
    let e = next_event(&mut stream).await;
    assert_eq!(e.revision, 2);
    // The servers re-read only every 5 minutes without a notification.
    assert!(
        sent.elapsed() < Duration::from_secs(5),
        "arrived by LISTEN/NOTIFY, not by polling"
    );

    // The watcher's server dies: a new watcher elsewhere resumes with no gap.
    a.kill().await;
    clusters_b
        .update_cluster(authed(ADMIN_KEY, resize(&name, 6)))
        .await
        .expect("update");
    let (_, mut again) = watch(clusters_b.clone(), ADMIN_KEY, &name, e.revision).await;
    assert_eq!(next_event(&mut again).await.revision, 3);
    b.kill().await;
}

#[tokio::test]
async fn watch_operation_follows_an_operation_until_it_is_done() {
    let app = spawn_app().await;
    let t = app.tenant("search").await;
    let created = app.create_cluster(&t.admin, "search", "logs", 3).await;
    let name = created.cluster.expect("c").name;
    let op = created.operation.expect("op").name;
    let mut stream = app
        .operations()
        .watch_operation(authed(
            &t.viewer,
            pb::WatchOperationRequest { name: op.clone() },
        ))
        .await
        .expect("watch op")
        .into_inner();
    let first = next_operation(&mut stream).await.expect("first");
    assert_eq!(
        (first.state, first.target_generation),
        (pb::OperationState::Queued as i32, 1)
    );

    app.clusters()
        .update_cluster(authed(&t.admin, resize(&name, 5)))
        .await
        .expect("update");
    let second = next_operation(&mut stream).await.expect("second");
    assert_eq!(
        second.target_generation, 2,
        "the queued create now carries generation 2"
    );

    app.clusters()
        .delete_cluster(authed(
            &t.admin,
            pb::DeleteClusterRequest {
                name,
                ..Default::default()
            },
        ))
        .await
        .expect("delete");
    let last = next_operation(&mut stream).await.expect("last");
    assert_eq!(last.state, pb::OperationState::Cancelled as i32);
    assert!(last.done);
    assert!(
        next_operation(&mut stream).await.is_none(),
        "the stream ends once the operation is done"
    );
}

async fn next_operation(s: &mut Streaming<pb::WatchOperationResponse>) -> Option<pb::Operation> {
    tokio::time::timeout(WAIT, s.next())
        .await
        .expect("in time")
        .map(|r| r.expect("ok").operation.expect("operation"))
}

#[tokio::test]
async fn shutdown_ends_open_streams_instead_of_waiting_for_them() {
    let app = spawn_app().await;
    let t = app.tenant("search").await;
    let name = app
        .create_cluster(&t.admin, "search", "logs", 3)
        .await
        .cluster
        .expect("c")
        .name;
    let (_, mut stream) = watch(app.clusters(), &t.viewer, &name, 0).await;
    let stopped = tokio::time::timeout(Duration::from_secs(10), app.stop()).await;
    assert!(stopped.is_ok(), "shutdown waited for the open watch stream");
    let last = tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("the stream ends");
    match last {
        Some(Err(status)) => assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}"),
        other => panic!("expected UNAVAILABLE, got {other:?}"),
    }
}

#[tokio::test]
async fn many_watchers_of_one_cluster_share_reads_and_each_gets_every_event_once() {
    let app = spawn_app().await;
    let t = app.tenant("search").await;
    let name = app
        .create_cluster(&t.admin, "search", "logs", 3)
        .await
        .cluster
        .expect("c")
        .name;
    // 150 watchers, woken together by every change.
    let mut streams = Vec::new();
    for _ in 0..150 {
        let (_, stream) = watch(app.clusters(), &t.viewer, &name, 0).await;
        streams.push(stream);
    }
    let mut clusters = app.clusters();
    for nodes in [4, 5] {
        let current = clusters
            .get_cluster(authed(
                &t.viewer,
                pb::GetClusterRequest { name: name.clone() },
            ))
            .await
            .expect("get")
            .into_inner()
            .cluster
            .expect("cluster");
        let mut req = resize(&name, nodes);
        if let Some(c) = req.cluster.as_mut() {
            c.etag = current.etag;
        }
        // The first change queues an update; the second supersedes its spec.
        let _ = clusters.update_cluster(authed(&t.admin, req)).await;
    }
    let newest = clusters
        .get_cluster(authed(
            &t.viewer,
            pb::GetClusterRequest { name: name.clone() },
        ))
        .await
        .expect("get")
        .into_inner()
        .cluster
        .expect("cluster")
        .revision;
    assert!(newest >= 2, "the updates logged events");
    // Every watcher sees every revision after its start exactly once, in order.
    let all = futures::future::join_all(streams.into_iter().map(|mut stream| async move {
        let mut seen = Vec::new();
        let mut want = 2;
        while want <= newest {
            let e = next_event(&mut stream).await;
            seen.push(e.revision);
            want = e.revision + 1;
        }
        seen
    }))
    .await;
    for seen in all {
        assert_eq!(seen, (2..=newest).collect::<Vec<_>>());
    }
}
