//! The worker protocol against the real control plane, with two raw
//! WorkerService streams acting as workers: assignment, acks, lease expiry,
//! reassignment, and fencing of a stale worker.

use std::time::Duration;

use esaas_proto::v1 as pb;
use esaas_proto::v1::worker_service_client::WorkerServiceClient;
use esaas_tests::*;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

const WAIT: Duration = Duration::from_secs(10);

struct RawWorker {
    tx: mpsc::Sender<pb::ConnectRequest>,
    rx: Streaming<pb::ConnectResponse>,
    next_report: u64,
    /// The session the control plane issued (its first message).
    session: String,
}

impl RawWorker {
    async fn connect(app: &App, key: &str, id: &str, capacity: i32) -> Self {
        Self::reconnect(app, key, id, capacity, "").await
    }

    /// Connects naming `previous` as the session whose work this worker stopped.
    async fn reconnect(app: &App, key: &str, id: &str, capacity: i32, previous: &str) -> Self {
        let (tx, rx) = mpsc::channel(64);
        tx.send(pb::ConnectRequest {
            message: Some(pb::connect_request::Message::Hello(pb::WorkerHello {
                worker_id: id.into(),
                region: "test".into(),
                capacity,
                version: "test".into(),
                previous_session_id: previous.into(),
                ..Default::default()
            })),
        })
        .await
        .expect("hello");
        let rx = WorkerServiceClient::new(app.channel())
            .connect(authed(key, ReceiverStream::new(rx)))
            .await
            .expect("connect")
            .into_inner();
        let mut w = Self {
            tx,
            rx,
            next_report: 1,
            session: String::new(),
        };
        match w.next().await {
            pb::connect_response::Message::SessionStarted(s) => w.session = s.session_id,
            other => panic!("the first message is not the session: {other:?}"),
        }
        w
    }

    async fn heartbeat(&self, leases: &[&pb::LeaseRef]) {
        self.tx
            .send(pb::ConnectRequest {
                message: Some(pb::connect_request::Message::Heartbeat(
                    pb::WorkerHeartbeat {
                        leases: leases.iter().map(|l| (*l).clone()).collect(),
                    },
                )),
            })
            .await
            .expect("heartbeat");
    }

    async fn next(&mut self) -> pb::connect_response::Message {
        tokio::time::timeout(WAIT, self.rx.next())
            .await
            .expect("a message in time")
            .expect("stream open")
            .expect("ok")
            .message
            .expect("message")
    }

    async fn assignment(&mut self) -> pb::Assignment {
        loop {
            if let pb::connect_response::Message::Assignment(a) = self.next().await {
                return a;
            }
        }
    }

    async fn report(
        &mut self,
        lease: &pb::LeaseRef,
        event: pb::lease_report::Event,
    ) -> pb::ReportAck {
        let report_id = self.next_report;
        self.next_report += 1;
        self.tx
            .send(pb::ConnectRequest {
                message: Some(pb::connect_request::Message::Report(pb::LeaseReport {
                    lease: Some(lease.clone()),
                    report_id,
                    event: Some(event),
                })),
            })
            .await
            .expect("send report");
        loop {
            if let pb::connect_response::Message::Ack(ack) = self.next().await {
                assert_eq!(ack.report_id, report_id);
                return ack;
            }
        }
    }
}

async fn worker_key(app: &App) -> String {
    app.admin()
        .create_api_key(authed(
            ADMIN_KEY,
            pb::CreateApiKeyRequest {
                parent: String::new(),
                api_key: Some(pb::ApiKey {
                    display_name: "workers".into(),
                    role: pb::Role::Worker as i32,
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .expect("worker key")
        .into_inner()
        .secret
}

async fn operation(app: &App, name: &str) -> pb::Operation {
    app.operations()
        .get_operation(authed(
            ADMIN_KEY,
            pb::GetOperationRequest { name: name.into() },
        ))
        .await
        .expect("get operation")
        .into_inner()
        .operation
        .expect("operation")
}

fn succeeded() -> pb::lease_report::Event {
    pb::lease_report::Event::Succeeded(pb::Completion {
        endpoint: "https://logs.search.es.example:9200".into(),
        health: pb::ClusterHealth::Green as i32,
        ..Default::default()
    })
}

async fn quick_leases() -> App {
    spawn_app_with(|c| {
        c.lease_ttl_seconds = 1;
        c.reap_interval_ms = 100;
        c.claim_interval_ms = 100;
        c.retry_backoff_base_seconds = 0;
    })
    .await
}

#[tokio::test]
async fn a_stale_worker_cannot_overwrite_newer_state() {
    let app = quick_leases().await;
    let key = worker_key(&app).await;
    let t = app.tenant("search").await;
    let created = app.create_cluster(&t.admin, "search", "logs", 3).await;
    let op_name = created.operation.expect("op").name;

    let mut w1 = RawWorker::connect(&app, &key, "w1", 1).await;
    let a1 = w1.assignment().await;
    let lease1 = a1.lease.clone().expect("lease");
    assert_eq!(lease1.operation, op_name);
    assert_eq!(a1.cluster.as_ref().map(|c| c.generation), Some(1));
    let ack = w1
        .report(
            &lease1,
            pb::lease_report::Event::StageStarted("namespace".into()),
        )
        .await;
    assert!(ack.accepted, "{}", ack.reason);
    assert_eq!(
        operation(&app, &op_name).await.state,
        pb::OperationState::Running as i32
    );

    // w1 pauses (no heartbeat): its lease lapses and the reaper re-queues the operation.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let op = operation(&app, &op_name).await;
        if op.state == pb::OperationState::Queued as i32 {
            assert_eq!(op.attempts[0].outcome, "lease expired");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the lease never expired"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let mut w2 = RawWorker::connect(&app, &key, "w2", 1).await;
    let a2 = w2.assignment().await;
    let lease2 = a2.lease.clone().expect("lease");
    assert_eq!(lease2.operation, op_name);
    assert!(
        lease2.lease_token > lease1.lease_token,
        "a new fencing token"
    );

    // w1 comes back and claims success on its old lease: refused, nothing changes.
    let before = operation(&app, &op_name).await;
    let stale = w1.report(&lease1, succeeded()).await;
    assert!(!stale.accepted);
    assert!(stale.reason.contains("another worker"), "{}", stale.reason);
    let after = operation(&app, &op_name).await;
    assert_eq!(after, before, "a refused report changes nothing");
    assert_eq!(after.state, pb::OperationState::Running as i32);
    let cluster = app
        .clusters()
        .get_cluster(authed(
            &t.viewer,
            pb::GetClusterRequest {
                name: "tenants/search/clusters/logs".into(),
            },
        ))
        .await
        .expect("get")
        .into_inner()
        .cluster
        .expect("cluster");
    assert_eq!(
        cluster.status.as_ref().map(|s| s.state),
        Some(pb::ClusterState::Provisioning as i32)
    );

    // A forged, higher token is refused too.
    let forged = pb::LeaseRef {
        operation: op_name.clone(),
        lease_token: lease2.lease_token + 10,
    };
    assert!(!w1.report(&forged, succeeded()).await.accepted);

    // The current holder finishes.
    let ok = w2.report(&lease2, succeeded()).await;
    assert!(ok.accepted, "{}", ok.reason);
    let done = operation(&app, &op_name).await;
    assert_eq!(done.state, pb::OperationState::Succeeded as i32);
    assert_eq!(done.attempts.len(), 2);
    assert_eq!(done.attempts[1].worker, "w2");
    assert_eq!(done.attempts[1].outcome, "succeeded");
    let cluster = app
        .clusters()
        .get_cluster(authed(
            &t.viewer,
            pb::GetClusterRequest {
                name: "tenants/search/clusters/logs".into(),
            },
        ))
        .await
        .expect("get")
        .into_inner()
        .cluster
        .expect("cluster");
    let status = cluster.status.expect("status");
    assert_eq!(status.state, pb::ClusterState::Ready as i32);
    assert_eq!(status.observed_generation, 1);
    assert_eq!(status.endpoint, "https://logs.search.es.example:9200");
    assert_eq!(status.current_operation, "");
}

#[tokio::test]
async fn heartbeats_keep_a_lease_and_list_workers_shows_it() {
    let app = quick_leases().await;
    let key = worker_key(&app).await;
    let t = app.tenant("search").await;
    let op_name = app
        .create_cluster(&t.admin, "search", "logs", 3)
        .await
        .operation
        .expect("op")
        .name;
    let mut w = RawWorker::connect(&app, &key, "steady", 2).await;
    let lease = w.assignment().await.lease.expect("lease");
    for _ in 0..8 {
        w.tx.send(pb::ConnectRequest {
            message: Some(pb::connect_request::Message::Heartbeat(
                pb::WorkerHeartbeat {
                    leases: vec![lease.clone()],
                },
            )),
        })
        .await
        .expect("heartbeat");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // 2.4 s with a 1 s lease: still ours.
    assert_eq!(
        operation(&app, &op_name).await.state,
        pb::OperationState::Running as i32
    );
    let workers = app
        .admin()
        .list_workers(authed(ADMIN_KEY, pb::ListWorkersRequest {}))
        .await
        .expect("list workers")
        .into_inner()
        .workers;
    assert_eq!(workers.len(), 1);
    assert_eq!(workers[0].name, "workers/steady");
    assert_eq!(workers[0].capacity, 2);
    assert_eq!(workers[0].leases, vec![op_name.clone()]);

    // The stream ends: the lease goes back to the queue at once, and the worker is gone.
    drop(w);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let op = operation(&app, &op_name).await;
        if op.state == pb::OperationState::Queued as i32 {
            assert_eq!(op.attempts[0].outcome, "worker disconnected");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the lease was not returned"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let workers = app
        .admin()
        .list_workers(authed(ADMIN_KEY, pb::ListWorkersRequest {}))
        .await
        .expect("list workers")
        .into_inner()
        .workers;
    assert!(workers.is_empty());
}

#[tokio::test]
async fn a_delete_cancels_the_running_operation_at_the_next_heartbeat() {
    let app = quick_leases().await;
    let key = worker_key(&app).await;
    let t = app.tenant("search").await;
    let created = app.create_cluster(&t.admin, "search", "logs", 3).await;
    let name = created.cluster.expect("c").name;
    let mut w = RawWorker::connect(&app, &key, "w", 1).await;
    let lease = w.assignment().await.lease.expect("lease");
    let del = app
        .clusters()
        .delete_cluster(authed(
            &t.admin,
            pb::DeleteClusterRequest {
                name,
                ..Default::default()
            },
        ))
        .await
        .expect("delete")
        .into_inner();
    w.tx.send(pb::ConnectRequest {
        message: Some(pb::connect_request::Message::Heartbeat(
            pb::WorkerHeartbeat {
                leases: vec![lease.clone()],
            },
        )),
    })
    .await
    .expect("heartbeat");
    let cancellation = loop {
        if let pb::connect_response::Message::Cancellation(c) = w.next().await {
            break c;
        }
    };
    assert_eq!(
        cancellation.lease.map(|l| l.operation),
        Some(lease.operation.clone())
    );
    assert!(
        cancellation.reason.contains("superseded"),
        "{}",
        cancellation.reason
    );
    let create_op = operation(&app, &lease.operation).await;
    assert_eq!(create_op.state, pb::OperationState::Cancelled as i32);
    // The same stream now gets the delete.
    let next = w.assignment().await;
    assert_eq!(
        next.lease.map(|l| l.operation),
        del.operation.map(|o| o.name)
    );
    assert_eq!(
        next.operation.map(|o| o.kind),
        Some(pb::OperationKind::Delete as i32)
    );
}

/// CancelOperation on a running create flags it; the control plane ends it at the
/// worker's next heartbeat and tells the worker, the cluster settles FAILED, and a
/// retry hands the same operation out again.
#[tokio::test]
async fn cancel_stops_a_running_operation_at_the_next_heartbeat() {
    let app = quick_leases().await;
    let key = worker_key(&app).await;
    let t = app.tenant("search").await;
    let created = app.create_cluster(&t.admin, "search", "logs", 3).await;
    let cluster = created.cluster.expect("c").name;
    let mut w = RawWorker::connect(&app, &key, "w", 1).await;
    let lease = w.assignment().await.lease.expect("lease");
    let answer = app
        .operations()
        .cancel_operation(authed(
            &t.admin,
            pb::CancelOperationRequest {
                name: lease.operation.clone(),
                request_id: String::new(),
            },
        ))
        .await
        .expect("cancel")
        .into_inner()
        .operation
        .expect("operation");
    // Still running until its worker is told.
    assert_eq!(answer.state, pb::OperationState::Running as i32);
    assert!(answer.cancel_requested);
    assert!(
        answer.message.contains("cancellation requested"),
        "{}",
        answer.message
    );
    w.tx.send(pb::ConnectRequest {
        message: Some(pb::connect_request::Message::Heartbeat(
            pb::WorkerHeartbeat {
                leases: vec![lease.clone()],
            },
        )),
    })
    .await
    .expect("heartbeat");
    let cancellation = loop {
        if let pb::connect_response::Message::Cancellation(c) = w.next().await {
            break c;
        }
    };
    assert_eq!(
        cancellation.lease.map(|l| l.operation),
        Some(lease.operation.clone())
    );
    assert!(
        cancellation.reason.contains("cancelled"),
        "{}",
        cancellation.reason
    );
    let op = operation(&app, &lease.operation).await;
    assert_eq!(op.state, pb::OperationState::Cancelled as i32);
    assert_eq!(op.attempts[0].outcome, "cancelled");
    let c = app
        .clusters()
        .get_cluster(authed(&t.admin, pb::GetClusterRequest { name: cluster }))
        .await
        .expect("get")
        .into_inner()
        .cluster
        .expect("cluster");
    let status = c.status.expect("status");
    assert_eq!(status.state, pb::ClusterState::Failed as i32);
    assert!(
        status.message.contains("creation cancelled"),
        "{}",
        status.message
    );
    // A retry hands the same operation out again, on the same stream.
    app.admin()
        .retry_operation(authed(
            &t.admin,
            pb::RetryOperationRequest {
                name: lease.operation.clone(),
                request_id: String::new(),
            },
        ))
        .await
        .expect("retry");
    let next = w.assignment().await.lease.expect("lease");
    assert_eq!(next.operation, lease.operation);
    assert!(next.lease_token > lease.lease_token, "a new fencing token");
}

#[tokio::test]
async fn the_first_message_must_be_hello_and_only_workers_connect() {
    let app = spawn_app().await;
    let key = worker_key(&app).await;
    let (tx, rx) = mpsc::channel(4);
    tx.send(pb::ConnectRequest {
        message: Some(pb::connect_request::Message::Heartbeat(
            pb::WorkerHeartbeat { leases: vec![] },
        )),
    })
    .await
    .expect("send");
    let err = WorkerServiceClient::new(app.channel())
        .connect(authed(&key, ReceiverStream::new(rx)))
        .await
        .expect_err("no hello");
    assert_eq!(violated_fields(&err), vec!["hello"]);

    let (tx, rx) = mpsc::channel(4);
    tx.send(pb::ConnectRequest {
        message: Some(pb::connect_request::Message::Hello(pb::WorkerHello {
            worker_id: "Bad Id".into(),
            capacity: 0,
            ..Default::default()
        })),
    })
    .await
    .expect("send");
    let err = WorkerServiceClient::new(app.channel())
        .connect(authed(&key, ReceiverStream::new(rx)))
        .await
        .expect_err("bad hello");
    assert_eq!(
        violated_fields(&err),
        vec!["hello.worker_id", "hello.capacity"]
    );
}

/// Waits until the operation satisfies `done`.
async fn wait_op(app: &App, name: &str, done: impl Fn(&pb::Operation) -> bool) -> pb::Operation {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let op = operation(app, name).await;
        if done(&op) {
            return op;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} is still {op:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn list_workers(app: &App) -> Vec<pb::Worker> {
    app.admin()
        .list_workers(authed(ADMIN_KEY, pb::ListWorkersRequest {}))
        .await
        .expect("list workers")
        .into_inner()
        .workers
}

/// Two processes that call themselves the same (every pod of a deploy that
/// forgot to set its id): each stream is its own session, and neither its
/// connecting nor its going away touches the other's lease.
#[tokio::test]
async fn two_sessions_with_one_worker_id_keep_their_own_leases() {
    let app = spawn_app_with(|c| {
        c.claim_interval_ms = 100;
        c.retry_backoff_base_seconds = 0;
    })
    .await;
    let key = worker_key(&app).await;
    let t = app.tenant("search").await;
    let first = app.create_cluster(&t.admin, "search", "one", 3).await;
    let first_op = first.operation.expect("op").name;

    let mut a = RawWorker::connect(&app, &key, "worker-1", 1).await;
    let lease_a = a.assignment().await.lease.expect("lease");
    assert_eq!(lease_a.operation, first_op);

    // A second process under the same id connects: the first keeps its lease.
    let mut b = RawWorker::connect(&app, &key, "worker-1", 1).await;
    assert_ne!(a.session, b.session, "one session per stream");
    let second = app.create_cluster(&t.admin, "search", "two", 3).await;
    let second_op = second.operation.expect("op").name;
    let lease_b = b.assignment().await.lease.expect("lease");
    assert_eq!(lease_b.operation, second_op);
    let ack = a
        .report(
            &lease_a,
            pb::lease_report::Event::StageStarted("namespace".into()),
        )
        .await;
    assert!(
        ack.accepted,
        "the first session still holds its lease: {}",
        ack.reason
    );

    // Each session holds what it was given, and the list shows both.
    let mut workers = list_workers(&app).await;
    workers.sort_by(|x, y| x.session_id.cmp(&y.session_id));
    let mut expected = vec![
        (a.session.clone(), vec![first_op.clone()]),
        (b.session.clone(), vec![second_op.clone()]),
    ];
    expected.sort();
    assert_eq!(
        workers
            .iter()
            .map(|w| (w.session_id.clone(), w.leases.clone()))
            .collect::<Vec<_>>(),
        expected
    );
    assert!(workers.iter().all(|w| w.name == "workers/worker-1"));

    // A report on the other session's lease is refused, even under the same id.
    let foreign = b
        .report(
            &lease_a,
            pb::lease_report::Event::StageStarted("namespace".into()),
        )
        .await;
    assert!(!foreign.accepted);
    assert!(
        foreign.reason.contains("another session"),
        "{}",
        foreign.reason
    );

    // The second goes away: its lease goes back, the first's stays.
    drop(b);
    let requeued = wait_op(&app, &second_op, |op| {
        op.state == pb::OperationState::Queued as i32
    })
    .await;
    assert_eq!(requeued.attempts[0].outcome, "worker disconnected");
    let held = operation(&app, &first_op).await;
    assert_eq!(held.state, pb::OperationState::Running as i32);
    assert_eq!(held.attempts.len(), 1, "{:?}", held.attempts);
    let ok = a.report(&lease_a, succeeded()).await;
    assert!(ok.accepted, "{}", ok.reason);
}

/// A worker whose stream broke reconnects before the control plane noticed
/// the old stream is dead: the new hello names the old session, whose
/// lease goes back at once and comes to the new session; when the old
/// stream is finally seen closed, nothing of the new session's is released.
#[tokio::test]
async fn a_reconnect_overlapping_the_old_session_keeps_the_new_leases() {
    let app = spawn_app_with(|c| {
        c.claim_interval_ms = 100;
        c.retry_backoff_base_seconds = 0;
        c.retry_backoff_max_seconds = 0;
    })
    .await;
    let key = worker_key(&app).await;
    let t = app.tenant("search").await;
    let op_name = app
        .create_cluster(&t.admin, "search", "logs", 3)
        .await
        .operation
        .expect("op")
        .name;
    let mut old = RawWorker::connect(&app, &key, "worker-1", 1).await;
    let old_lease = old.assignment().await.lease.expect("lease");

    // The old stream stays open (the control plane has not noticed yet).
    let mut new = RawWorker::reconnect(&app, &key, "worker-1", 1, &old.session).await;
    let new_lease = new
        .assignment()
        .await
        .lease
        .expect("the old lease, released at once");
    assert_eq!(new_lease.operation, op_name);
    assert!(new_lease.lease_token > old_lease.lease_token);
    let op = operation(&app, &op_name).await;
    assert_eq!(
        op.attempts
            .iter()
            .map(|a| a.outcome.as_str())
            .collect::<Vec<_>>(),
        vec!["worker disconnected", ""]
    );

    // Now the old stream closes: the new session's lease stays.
    drop(old);
    tokio::time::sleep(Duration::from_millis(500)).await;
    new.heartbeat(&[&new_lease]).await;
    let ack = new
        .report(
            &new_lease,
            pb::lease_report::Event::StageStarted("namespace".into()),
        )
        .await;
    assert!(ack.accepted, "{}", ack.reason);
    let op = operation(&app, &op_name).await;
    assert_eq!(op.state, pb::OperationState::Running as i32);
    assert_eq!(op.attempts.len(), 2, "{:?}", op.attempts);
    let sessions: Vec<String> = list_workers(&app)
        .await
        .into_iter()
        .map(|w| w.session_id)
        .collect();
    assert_eq!(sessions, vec![new.session.clone()]);

    // A hello may only name a session as a UUID.
    let (tx, rx) = mpsc::channel(4);
    tx.send(pb::ConnectRequest {
        message: Some(pb::connect_request::Message::Hello(pb::WorkerHello {
            worker_id: "worker-1".into(),
            region: "test".into(),
            capacity: 1,
            version: "test".into(),
            previous_session_id: "not-a-session".into(),
            ..Default::default()
        })),
    })
    .await
    .expect("hello");
    let refused = WorkerServiceClient::new(app.channel())
        .connect(authed(&key, ReceiverStream::new(rx)))
        .await
        .expect_err("refused");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert_eq!(violated_fields(&refused), vec!["hello.previous_session_id"]);
}
