//! Retention: events, idempotency records, attempt logs and tombstones
//! expire after their periods (`[retention]`), through `esaas serve`
//! processes with tiny periods; a watch from an expired revision is
//! OUT_OF_RANGE naming the oldest revision kept, and Get + watch from its
//! revision (or the SDK, by itself) carries on. The sweep's SQL is checked
//! against the rule of `esaas_core::lifecycle::retention` row by row, and
//! timed on 100,000 expired events.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use esaas_core::cluster::ClusterState;
use esaas_core::lifecycle::retention::{self, Retention};
use esaas_core::operation::OperationState;
use esaas_proto::v1 as pb;
use esaas_proto::v1::cluster_service_client::ClusterServiceClient;
use esaas_tests::sim::{Sim, SimConfig};
use esaas_tests::*;
use tokio_stream::StreamExt;
use tonic::Streaming;
use tonic::transport::Channel;
use tonic_types::StatusExt;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(15);

fn clusters(ch: &Channel) -> ClusterServiceClient<Channel> {
    ClusterServiceClient::new(ch.clone())
}

fn watch_request(name: &str, since: i64) -> tonic::Request<pb::WatchClusterRequest> {
    authed(
        ADMIN_KEY,
        pb::WatchClusterRequest {
            name: name.into(),
            since_revision: since,
        },
    )
}

/// Opens a watch and reads its first message, the cluster.
async fn watch(
    ch: &Channel,
    name: &str,
    since: i64,
) -> (pb::Cluster, Streaming<pb::WatchClusterResponse>) {
    let mut stream = clusters(ch)
        .watch_cluster(watch_request(name, since))
        .await
        .unwrap_or_else(|s| panic!("watch from {since}: {s:?}"))
        .into_inner();
    let first = tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("first message in time")
        .expect("a first message")
        .expect("ok");
    match first.payload {
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

async fn resize(ch: &Channel, name: &str, nodes: i32) {
    clusters(ch)
        .update_cluster(authed(
            ADMIN_KEY,
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
            },
        ))
        .await
        .expect("update");
}

async fn get(ch: &Channel, name: &str) -> pb::Cluster {
    clusters(ch)
        .get_cluster(authed(
            ADMIN_KEY,
            pb::GetClusterRequest { name: name.into() },
        ))
        .await
        .expect("get")
        .into_inner()
        .cluster
        .expect("cluster")
}

/// Polls `query` (one bigint or null) until `done` holds.
async fn wait_for(pool: &sqlx::PgPool, query: &str, done: impl Fn(Option<i64>) -> bool) {
    let deadline = Instant::now() + WAIT;
    loop {
        let v: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(query.to_string()))
            .fetch_one(pool)
            .await
            .expect("query");
        if done(v) {
            return;
        }
        assert!(Instant::now() < deadline, "{query} stayed at {v:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `esaas serve` with `toml` on a fresh database, and tenant `search`.
async fn serve_search(toml: &str) -> (TestDb, ServerProcess, tonic::transport::Channel) {
    let db = TestDb::new().await;
    let server = ServerProcess::start_with(&db, free_port(), toml).await;
    let ch = channel(server.addr).await;
    create_tenant_on(ch.clone(), "search").await;
    (db, server, ch)
}

#[tokio::test]
async fn a_watch_from_an_expired_revision_is_out_of_range_and_get_then_watch_carries_on() {
    let (db, server, ch) =
        serve_search("[retention]\nevents_seconds = 3\ninterval_ms = 100\n").await;
    let name = clusters(&ch)
        .create_cluster(authed(ADMIN_KEY, create_request("search", "logs", 3)))
        .await
        .expect("create")
        .into_inner()
        .cluster
        .expect("cluster")
        .name;
    for nodes in [4, 5, 6] {
        resize(&ch, &name, nodes).await;
    }
    let newest = get(&ch, &name).await.revision;
    assert!(newest >= 4, "every update is an event: {newest}");

    // Young events are served from any revision.
    let (_, mut stream) = watch(&ch, &name, 1).await;
    assert_eq!(next_event(&mut stream).await.revision, 2);
    drop(stream);

    // Seconds later every event but the newest has gone.
    let pool = db.pool().await;
    let uid = sqlx::query_scalar::<_, Uuid>("SELECT uid FROM clusters")
        .fetch_one(&pool)
        .await
        .expect("uid");
    wait_for(
        &pool,
        &format!("SELECT min(revision) FROM cluster_events WHERE cluster_uid = '{uid}'"),
        |oldest| oldest == Some(newest),
    )
    .await;

    // From an expired revision: OUT_OF_RANGE, naming the oldest kept.
    let status = clusters(&ch)
        .watch_cluster(watch_request(&name, 1))
        .await
        .expect_err("revision 1 has expired");
    assert_eq!(status.code(), tonic::Code::OutOfRange, "{status:?}");
    assert_eq!(reason(&status), "REVISION_EXPIRED");
    let info = status.get_details_error_info().expect("error info");
    assert_eq!(
        info.metadata.get("oldest_revision"),
        Some(&newest.to_string())
    );
    assert_eq!(violated_fields(&status), vec!["since_revision"]);
    assert!(
        status.message().contains("GetCluster"),
        "the message says how to resync: {}",
        status.message()
    );

    // One behind the newest is still complete: served as asked.
    let (_, mut stream) = watch(&ch, &name, newest - 1).await;
    assert_eq!(next_event(&mut stream).await.revision, newest);
    drop(stream);

    // Get, then watch from its revision: the next change arrives.
    let current = get(&ch, &name).await;
    let (first, mut stream) = watch(&ch, &name, current.revision).await;
    assert_eq!(first.revision, current.revision);
    // 0 still means "from now".
    let (now, mut from_now) = watch(&ch, &name, 0).await;
    assert_eq!(now.revision, current.revision);
    // The SDK resynchronises by itself and says so.
    let sdk = sdk(ch.clone(), ADMIN_KEY);
    let mut sdk_watch = sdk.watch_cluster(&name, 1);
    let item = tokio::time::timeout(WAIT, sdk_watch.next())
        .await
        .expect("in time")
        .expect("an item")
        .expect("ok");
    match item {
        esaas_client::WatchItem::Resynced { after, cluster } => {
            assert_eq!(after, 1);
            assert_eq!(cluster.revision, current.revision);
        }
        other => panic!("expected Resynced, got {other:?}"),
    }

    resize(&ch, &name, 7).await;
    assert_eq!(next_event(&mut stream).await.revision, current.revision + 1);
    assert_eq!(
        next_event(&mut from_now).await.revision,
        current.revision + 1
    );
    let item = tokio::time::timeout(WAIT, sdk_watch.next())
        .await
        .expect("in time")
        .expect("an item")
        .expect("ok");
    assert!(
        matches!(&item, esaas_client::WatchItem::Event(e) if e.revision == current.revision + 1),
        "{item:?}"
    );
    server.kill().await;
}

#[tokio::test]
async fn a_request_id_is_new_again_once_its_record_expired() {
    let (db, server, ch) =
        serve_search("[retention]\nidempotency_seconds = 3\ninterval_ms = 100\n").await;
    let request_id = Uuid::new_v4().to_string();
    let create = |id: &str| pb::CreateClusterRequest {
        request_id: request_id.clone(),
        ..create_request("search", id, 3)
    };
    let first = clusters(&ch)
        .create_cluster(authed(ADMIN_KEY, create("logs")))
        .await
        .expect("create")
        .into_inner();
    // Within the period: the same id replays, with another body it is refused.
    let again = clusters(&ch)
        .create_cluster(authed(ADMIN_KEY, create("logs")))
        .await
        .expect("replayed")
        .into_inner();
    assert_eq!(again.cluster, first.cluster);
    let refused = clusters(&ch)
        .create_cluster(authed(ADMIN_KEY, create("metrics")))
        .await
        .expect_err("reused id");
    assert_eq!(reason(&refused), "REQUEST_ID_REUSED");

    let pool = db.pool().await;
    wait_for(&pool, "SELECT count(*) FROM idempotency", |n| n == Some(0)).await;

    // After it: the id is a new request.
    let fresh = clusters(&ch)
        .create_cluster(authed(ADMIN_KEY, create("metrics")))
        .await
        .expect("a new request")
        .into_inner();
    assert_eq!(
        fresh.cluster.map(|c| c.name),
        Some("tenants/search/clusters/metrics".to_string())
    );
    server.kill().await;
}

#[tokio::test]
async fn tombstones_go_after_their_period_unless_they_list_retained_volumes() {
    let (db, server, ch) = serve_search(
        "claim_interval_ms = 100\n[retention]\ntombstones_seconds = 2\ninterval_ms = 100\n",
    )
    .await;
    let key = worker_key_on(ch.clone()).await;
    let sim_config = SimConfig::default();
    let _sim = Sim::connect(&db.url, sim_config).await.expect("sim");
    let worker = WorkerProcess::spawn(
        &format!("http://{}", server.addr),
        &key,
        "w1",
        &db.url,
        sim_config,
        Duration::from_millis(20),
        Duration::from_secs(60),
    );
    let mut names = Vec::new();
    for (id, retention) in [
        ("gone", pb::VolumeRetention::Delete),
        ("kept", pb::VolumeRetention::Retain),
    ] {
        let mut req = create_request("search", id, 1);
        if let Some(s) = req.cluster.as_mut().and_then(|c| c.spec.as_mut()) {
            s.volume_retention = retention as i32;
        }
        let c = clusters(&ch)
            .create_cluster(authed(ADMIN_KEY, req))
            .await
            .expect("create")
            .into_inner()
            .cluster
            .expect("cluster");
        wait_cluster_at(ch.clone(), &c.name, WAIT * 4, |c| {
            state(c) == pb::ClusterState::Ready as i32
        })
        .await;
        names.push(c.name);
    }
    for name in &names {
        clusters(&ch)
            .delete_cluster(authed(
                ADMIN_KEY,
                pb::DeleteClusterRequest {
                    name: name.clone(),
                    ..Default::default()
                },
            ))
            .await
            .expect("delete");
    }
    let kept = wait_cluster_at(ch.clone(), &names[1], WAIT * 4, |c| {
        state(c) == pb::ClusterState::Deleted as i32
    })
    .await;
    assert!(
        !kept
            .status
            .as_ref()
            .expect("status")
            .retained_volumes
            .is_empty(),
        "the retained cluster lists its volumes: {kept:?}"
    );

    // The plain tombstone goes with everything it had; the retained one stays.
    let deadline = Instant::now() + WAIT;
    loop {
        let answer = clusters(&ch)
            .get_cluster(authed(
                ADMIN_KEY,
                pb::GetClusterRequest {
                    name: names[0].clone(),
                },
            ))
            .await;
        match answer {
            Err(s) if s.code() == tonic::Code::NotFound => break,
            other => assert!(
                Instant::now() < deadline,
                "tombstone still there: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pool = db.pool().await;
    for table in ["clusters", "cluster_events", "operations"] {
        let column = if table == "clusters" {
            "cluster_id"
        } else {
            "(SELECT cluster_id FROM clusters c WHERE c.uid = cluster_uid)"
        };
        let left: Vec<Option<String>> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT DISTINCT {column} FROM {table}"
        )))
        .fetch_all(&pool)
        .await
        .expect("rows");
        assert_eq!(left, vec![Some("kept".to_string())], "{table}");
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let still = get(&ch, &names[1]).await;
    assert_eq!(state(&still), pb::ClusterState::Deleted as i32);
    worker.kill().await;
    server.kill().await;
}

/// What the test inserts and the rule decides about.
struct Fixture {
    now: DateTime<Utc>,
    /// (cluster, revision, age in hours)
    events: Vec<(Uuid, i64, i64)>,
    /// (request id, age in hours)
    answers: Vec<(Uuid, i64)>,
    /// (operation, cluster, state, attempts, ended hours ago)
    operations: Vec<(Uuid, Uuid, OperationState, usize, Option<i64>)>,
    /// (cluster, state, newest revision, hours since its last change, retained volumes)
    clusters: Vec<(Uuid, ClusterState, i64, i64, Vec<String>)>,
}

async fn insert(pool: &sqlx::PgPool, f: &Fixture) {
    let at = |hours: i64| f.now - chrono::Duration::hours(hours);
    sqlx::query("INSERT INTO tenants (id, display_name, max_clusters, max_nodes, max_storage_gib) VALUES ('t', 't', 100, 100, 100)")
        .execute(pool).await.expect("tenant");
    for (i, (uid, state, revision, age, volumes)) in f.clusters.iter().enumerate() {
        sqlx::query(
            "INSERT INTO clusters (uid, tenant_id, cluster_id, spec, node_count, storage_gib, generation, state, health, \
             revision, update_time, retained_volumes) VALUES ($1, 't', $2, '{}', 1, 10, 1, $3, 'UNKNOWN', $4, $5, $6)",
        )
        .bind(uid)
        .bind(format!("c{i}"))
        .bind(state.as_str())
        .bind(revision)
        .bind(at(*age))
        .bind(serde_json::json!(volumes))
        .execute(pool)
        .await
        .expect("cluster");
    }
    for (uid, revision, age) in &f.events {
        sqlx::query(
            "INSERT INTO cluster_events (cluster_uid, revision, kind, message, snapshot, create_time) \
             VALUES ($1, $2, 'STATUS_CHANGED', '', '{}', $3)",
        )
        .bind(uid)
        .bind(revision)
        .bind(at(*age))
        .execute(pool)
        .await
        .expect("event");
    }
    for (id, age) in &f.answers {
        sqlx::query(
            "INSERT INTO idempotency (scope, method, request_id, request_hash, answer, create_time) \
             VALUES ('tenants/t', 'CreateCluster', $1, '\\x00', '{}', $2)",
        )
        .bind(id)
        .bind(at(*age))
        .execute(pool)
        .await
        .expect("answer");
    }
    for (id, cluster, state, attempts, ended) in &f.operations {
        let log: Vec<serde_json::Value> = (1..=*attempts)
            .map(|n| serde_json::json!({"number": n, "worker": "w", "start_time": f.now, "end_time": null, "outcome": null}))
            .collect();
        sqlx::query(
            "INSERT INTO operations (id, tenant_id, cluster_uid, kind, state, initiator_kind, initiator, \
             target_generation, max_attempts, attempt_log, end_time) \
             VALUES ($1, 't', $2, 'UPDATE', $3, 'TENANT', 'k', 1, 5, $4, $5)",
        )
        .bind(id)
        .bind(cluster)
        .bind(state.as_str())
        .bind(serde_json::json!(log))
        .bind(ended.map(at))
        .execute(pool)
        .await
        .expect("operation");
    }
}

#[tokio::test]
async fn the_sweep_removes_exactly_what_the_rule_calls_expired() {
    let db = TestDb::new().await;
    let pool = db.pool().await;
    let now = esaas_core::now();
    let periods = Retention {
        events: chrono::Duration::days(14),
        idempotency: chrono::Duration::hours(24),
        tombstones: chrono::Duration::days(30),
        attempt_logs: chrono::Duration::days(30),
    };
    let cutoffs = periods.cutoffs(now);
    let id = Uuid::new_v4;
    let (live, old_tomb, retained_tomb, young_tomb, deleting) = (id(), id(), id(), id(), id());
    let (final_tomb, final_gone_tomb) = (id(), id());
    let day = 24;
    let f = Fixture {
        now,
        clusters: vec![
            (live, ClusterState::Ready, 5, 400 * day, vec![]),
            (old_tomb, ClusterState::Deleted, 2, 31 * day, vec![]),
            (
                retained_tomb,
                ClusterState::Deleted,
                2,
                400 * day,
                vec!["ns/claim".into()],
            ),
            (young_tomb, ClusterState::Deleted, 2, 29 * day, vec![]),
            (deleting, ClusterState::Deleting, 2, 400 * day, vec![]),
            (final_tomb, ClusterState::Deleted, 2, 400 * day, vec![]),
            (final_gone_tomb, ClusterState::Deleted, 2, 400 * day, vec![]),
        ],
        events: vec![
            (live, 1, 20 * day),
            (live, 2, 15 * day),
            (live, 3, 13 * day),
            (live, 4, 14 * day + 1),
            (live, 5, 100 * day), // the newest, however old
            (old_tomb, 1, 40 * day),
            (old_tomb, 2, 31 * day),
            (retained_tomb, 1, 400 * day),
            (retained_tomb, 2, 400 * day),
            (young_tomb, 1, 29 * day),
            (young_tomb, 2, 29 * day),
            (deleting, 1, 400 * day),
            (deleting, 2, 400 * day),
        ],
        answers: vec![(id(), 25), (id(), 23), (id(), 24 * 30)],
        operations: vec![
            (id(), live, OperationState::Succeeded, 3, Some(31 * day)),
            (id(), live, OperationState::Failed, 5, Some(40 * day)),
            (id(), live, OperationState::Succeeded, 1, Some(40 * day)),
            (id(), live, OperationState::Succeeded, 3, Some(2 * day)),
            (id(), live, OperationState::Stalled, 3, None),
            (id(), old_tomb, OperationState::Succeeded, 2, Some(31 * day)),
            (id(), deleting, OperationState::Running, 2, None),
        ],
    };
    insert(&pool, &f).await;
    // Two tombstones list a final snapshot: one's record is kept, the other's is gone.
    for uid in [final_tomb, final_gone_tomb] {
        sqlx::query(
            "UPDATE clusters SET snapshot_status = '{\"final_snapshot\": \"final-x\"}' WHERE uid = $1",
        )
        .bind(uid)
        .execute(&pool)
        .await
        .expect("final snapshot");
    }
    sqlx::query(
        "INSERT INTO cluster_snapshots (cluster_uid, name, tenant_id, cluster_id, kind, operation_id, snapshot) \
         VALUES ($1, 'final-x', 't', 'cf', 'FINAL', $2, '{}')",
    )
    .bind(final_tomb)
    .bind(id())
    .execute(&pool)
    .await
    .expect("snapshot record");
    let store = esaas_store::Store::connect(&db.url, 2)
        .await
        .expect("store");
    let swept = store
        .sweep(&cutoffs, 2) // tiny batches: every loop runs more than once
        .await
        .expect("sweep")
        .expect("no other sweep");

    let at = |hours: i64| now - chrono::Duration::hours(hours);
    let gone_cluster = |uid: &Uuid| {
        f.clusters.iter().any(|(u, state, _, age, volumes)| {
            u == uid
                && retention::tombstone_expired(
                    *state,
                    at(*age),
                    volumes,
                    *u == final_tomb,
                    &cutoffs,
                )
        })
    };
    let newest = |uid: &Uuid| {
        f.clusters
            .iter()
            .find(|c| &c.0 == uid)
            .map(|c| c.2)
            .unwrap_or_default()
    };
    let mut want_events: Vec<(Uuid, i64)> = f
        .events
        .iter()
        .filter(|(uid, rev, age)| {
            !gone_cluster(uid) && !retention::event_expired(at(*age), *rev, newest(uid), &cutoffs)
        })
        .map(|(u, r, _)| (*u, *r))
        .collect();
    want_events.sort();
    let mut got_events: Vec<(Uuid, i64)> =
        sqlx::query_as("SELECT cluster_uid, revision FROM cluster_events")
            .fetch_all(&pool)
            .await
            .expect("events");
    got_events.sort();
    assert_eq!(got_events, want_events, "events");

    let mut want_answers: Vec<Uuid> = f
        .answers
        .iter()
        .filter(|(_, age)| !retention::idempotency_expired(at(*age), &cutoffs))
        .map(|a| a.0)
        .collect();
    want_answers.sort();
    let mut got_answers: Vec<Uuid> = sqlx::query_scalar("SELECT request_id FROM idempotency")
        .fetch_all(&pool)
        .await
        .expect("answers");
    got_answers.sort();
    assert_eq!(got_answers, want_answers, "idempotency records");

    let mut want_ops: Vec<(Uuid, i64)> = f
        .operations
        .iter()
        .filter(|o| !gone_cluster(&o.1))
        .map(|(id, _, state, n, ended)| {
            let trimmed = retention::attempt_log_expired(*state, ended.map(at), *n, &cutoffs);
            let kept = if trimmed {
                retention::KEPT_ATTEMPTS
            } else {
                *n
            };
            (*id, kept as i64)
        })
        .collect();
    want_ops.sort();
    let mut got_ops: Vec<(Uuid, i64)> =
        sqlx::query_as("SELECT id, jsonb_array_length(attempt_log)::bigint FROM operations")
            .fetch_all(&pool)
            .await
            .expect("operations");
    got_ops.sort();
    assert_eq!(got_ops, want_ops, "attempt logs");
    // The kept attempt is the last one.
    let numbers: Vec<i64> = sqlx::query_scalar(
        "SELECT (attempt_log->0->>'number')::bigint FROM operations WHERE state = 'FAILED'",
    )
    .fetch_all(&pool)
    .await
    .expect("numbers");
    assert_eq!(numbers, vec![5]);

    let mut want_clusters: Vec<Uuid> = f
        .clusters
        .iter()
        .map(|c| c.0)
        .filter(|u| !gone_cluster(u))
        .collect();
    want_clusters.sort();
    let mut got_clusters: Vec<Uuid> = sqlx::query_scalar("SELECT uid FROM clusters")
        .fetch_all(&pool)
        .await
        .expect("clusters");
    got_clusters.sort();
    assert_eq!(got_clusters, want_clusters, "tombstones");
    assert!(got_clusters.contains(&final_tomb) && !got_clusters.contains(&final_gone_tomb));
    assert_eq!(swept.tombstones, 2);

    // Nothing left to do: a second sweep removes nothing.
    let again = store
        .sweep(&cutoffs, 2)
        .await
        .expect("sweep")
        .expect("free");
    assert!(again.is_empty(), "{again:?}");
}

#[tokio::test]
async fn sweeping_100k_expired_events_in_batches_while_writes_go_on() {
    let db = TestDb::new().await;
    let pool = db.pool().await;
    let now = esaas_core::now();
    const CLUSTERS: i64 = 100;
    const PER_CLUSTER: i64 = 1_001; // 1,000 expired and the newest of each
    sqlx::query("INSERT INTO tenants (id, display_name, max_clusters, max_nodes, max_storage_gib) VALUES ('t', 't', 1000, 1000, 1000)")
        .execute(&pool).await.expect("tenant");
    sqlx::query(
        "INSERT INTO clusters (uid, tenant_id, cluster_id, spec, node_count, storage_gib, generation, state, health, revision) \
         SELECT gen_random_uuid(), 't', 'c' || i, '{}', 1, 10, 1, 'READY', 'GREEN', $1 FROM generate_series(1, $2) AS i",
    )
    .bind(PER_CLUSTER)
    .bind(CLUSTERS)
    .execute(&pool)
    .await
    .expect("clusters");
    // Snapshots of a realistic size (about 2 KiB each).
    sqlx::query(
        "INSERT INTO cluster_events (cluster_uid, revision, kind, message, snapshot, create_time) \
         SELECT c.uid, r, 'STATUS_CHANGED', 'stage pods_ready started', jsonb_build_object('padding', repeat('x', 2000)), \
                $1::timestamptz - make_interval(days => 30) + make_interval(secs => r) \
         FROM clusters c, generate_series(1, $2) AS r",
    )
    .bind(now)
    .bind(PER_CLUSTER)
    .execute(&pool)
    .await
    .expect("events");
    sqlx::query("ANALYZE")
        .execute(&pool)
        .await
        .expect("analyze");

    let plan: Vec<String> = sqlx::query_scalar(
        "EXPLAIN SELECT e.cluster_uid, e.revision FROM cluster_events e JOIN clusters c ON c.uid = e.cluster_uid \
         WHERE e.create_time < $1 AND e.revision < c.revision ORDER BY e.create_time LIMIT 1000",
    )
    .bind(now - chrono::Duration::days(14))
    .fetch_all(&pool)
    .await
    .expect("explain");
    println!("plan of one batch:\n{}", plan.join("\n"));
    assert!(
        plan.iter().any(|l| l.contains("cluster_events_by_time")),
        "a batch walks the time index: {plan:#?}"
    );

    let store = esaas_store::Store::connect(&db.url, 4)
        .await
        .expect("store");
    let other = esaas_store::Store::connect(&db.url, 2)
        .await
        .expect("store");
    let periods = Retention {
        events: chrono::Duration::days(14),
        idempotency: chrono::Duration::hours(24),
        tombstones: chrono::Duration::days(30),
        attempt_logs: chrono::Duration::days(30),
    };
    let cutoffs = periods.cutoffs(now);
    // A cluster that changes while the sweep runs.
    let a_cluster = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO clusters (uid, tenant_id, cluster_id, spec, node_count, storage_gib, generation, state, health) \
         VALUES ($1, 't', 'busy', '{}', 1, 10, 1, 'READY', 'GREEN')",
    )
    .bind(a_cluster)
    .execute(&pool)
    .await
    .expect("busy cluster");

    let started = Instant::now();
    let sweep = tokio::spawn({
        let store = store.clone();
        async move { store.sweep(&cutoffs, 1000).await }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    // Meanwhile: a second sweep stands aside, and the cluster's log keeps growing
    // (a write under the cluster's row lock, as every change does) without waiting.
    let second = other.sweep(&cutoffs, 1000).await.expect("second sweep");
    let mut slowest_write = Duration::ZERO;
    let mut revision = 0;
    while !sweep.is_finished() {
        revision += 1;
        let t = Instant::now();
        let mut tx = pool.begin().await.expect("tx");
        sqlx::query("UPDATE clusters SET revision = $2 WHERE uid = $1")
            .bind(a_cluster)
            .bind(revision)
            .execute(&mut *tx)
            .await
            .expect("lock");
        sqlx::query(
            "INSERT INTO cluster_events (cluster_uid, revision, kind, message, snapshot) VALUES ($1, $2, 'STATUS_CHANGED', '', '{}')",
        )
        .bind(a_cluster)
        .bind(revision)
        .execute(&mut *tx)
        .await
        .expect("event");
        tx.commit().await.expect("commit");
        slowest_write = slowest_write.max(t.elapsed());
    }
    let swept = sweep
        .await
        .expect("task")
        .expect("sweep")
        .expect("it swept");
    let elapsed = started.elapsed();
    println!(
        "swept {} expired events in {elapsed:?} ({:.0} events/s); {} writes meanwhile, slowest {slowest_write:?}; second sweep: {second:?}",
        swept.events,
        swept.events as f64 / elapsed.as_secs_f64(),
        revision,
    );
    assert_eq!(swept.events, (CLUSTERS * (PER_CLUSTER - 1)) as u64);
    assert_eq!(second, None, "one sweep at a time");
    assert!(slowest_write < Duration::from_secs(1), "{slowest_write:?}");
    let left: i64 =
        sqlx::query_scalar("SELECT count(*) FROM cluster_events WHERE create_time < $1")
            .bind(cutoffs.events)
            .fetch_one(&pool)
            .await
            .expect("count");
    assert_eq!(left, CLUSTERS, "the newest event of each cluster stays");
}
