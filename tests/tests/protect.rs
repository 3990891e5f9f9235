//! Data safety through the real server, store and workers (on the simulated
//! backends): deletion protection, an audited override of a stalled gate,
//! and an update that supersedes a stalled operation.

use std::time::Duration;

use esaas_core::cluster::Health;
use esaas_proto::v1 as pb;
use esaas_tests::sim::SimConfig;
use esaas_tests::*;
use tokio_stream::StreamExt;
use tonic_types::StatusExt;

const LONG: Duration = Duration::from_secs(30);

fn uid(c: &pb::Cluster) -> uuid::Uuid {
    uuid::Uuid::parse_str(&c.uid).expect("uid")
}

fn protection(name: &str, on: bool) -> pb::UpdateClusterRequest {
    pb::UpdateClusterRequest {
        cluster: Some(pb::Cluster {
            name: name.into(),
            spec: Some(pb::ClusterSpec {
                deletion_protection: on,
                ..Default::default()
            }),
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["spec.deletion_protection".into()],
        }),
        ..Default::default()
    }
}

fn delete(name: &str, validate_only: bool) -> pb::DeleteClusterRequest {
    pb::DeleteClusterRequest {
        name: name.into(),
        validate_only,
        ..Default::default()
    }
}

/// The one PreconditionFailure violation of `status`: (type, subject, description).
fn precondition(status: &tonic::Status) -> (String, String, String) {
    let v = status
        .get_details_precondition_failure()
        .expect("PreconditionFailure")
        .violations;
    assert_eq!(v.len(), 1, "{v:?}");
    (
        v[0].r#type.clone(),
        v[0].subject.clone(),
        v[0].description.clone(),
    )
}

#[tokio::test]
async fn a_protected_cluster_refuses_delete_until_the_flag_is_cleared() {
    let app = spawn_app().await;
    let t = app.tenant("search").await;
    let mut req = create_request("search", "logs", 3);
    if let Some(spec) = req.cluster.as_mut().and_then(|c| c.spec.as_mut()) {
        spec.deletion_protection = true;
    }
    let created = app
        .clusters()
        .create_cluster(authed(&t.admin, req))
        .await
        .expect("create")
        .into_inner();
    let cluster = created.cluster.expect("cluster");
    let name = cluster.name.clone();
    assert!(cluster.spec.as_ref().expect("spec").deletion_protection);

    // The dry run and the real call say the same.
    for validate_only in [true, false] {
        let err = app
            .clusters()
            .delete_cluster(authed(&t.admin, delete(&name, validate_only)))
            .await
            .expect_err("protected");
        assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
        let (kind, subject, description) = precondition(&err);
        assert_eq!(kind, "DELETION_PROTECTION");
        assert_eq!(subject, name);
        assert!(
            description.contains("spec.deletion_protection"),
            "{description}"
        );
    }
    let still = app
        .wait_cluster(&name, LONG, |c| {
            state(c) == pb::ClusterState::Provisioning as i32
        })
        .await;

    // Clearing it needs no operation and no new generation.
    let cleared = app
        .clusters()
        .update_cluster(authed(&t.admin, protection(&name, false)))
        .await
        .expect("clear")
        .into_inner();
    assert_eq!(cleared.operation, None);
    assert_eq!(cleared.disruption, pb::Disruption::None as i32);
    let after = cleared.cluster.expect("cluster");
    assert!(!after.spec.as_ref().expect("spec").deletion_protection);
    let (before, now) = (
        still.status.as_ref().expect("status"),
        after.status.as_ref().expect("status"),
    );
    assert_eq!(after.generation, still.generation);
    assert_eq!(now.current_operation, before.current_operation);
    assert_ne!(after.etag, still.etag);

    let deleted = app
        .clusters()
        .delete_cluster(authed(&t.admin, delete(&name, false)))
        .await
        .expect("delete once unprotected")
        .into_inner();
    assert_eq!(
        deleted.cluster.as_ref().map(state),
        Some(pb::ClusterState::Deleting as i32)
    );
    app.stop().await;
}

#[tokio::test]
async fn an_override_lets_a_stalled_gate_pass_and_the_log_names_who_and_why() {
    let (app, sim) = spawn_app_with_workers(1, SimConfig::default(), |c| {
        c.worker.gate_timeout_seconds = 1
    })
    .await;
    let t = app.tenant("search").await;
    let created = app.create_cluster(&t.admin, "search", "logs", 3).await;
    let cluster = created.cluster.expect("c");
    let name = cluster.name.clone();
    let reason = "index logs-7 has 2 unassigned replicas";
    sim.force_health(uid(&cluster), Some((Health::Yellow, reason)))
        .await;
    let op_name = created.operation.expect("op").name;
    app.wait_operation(&op_name, LONG, |o| {
        o.state == pb::OperationState::Stalled as i32
    })
    .await;

    let request = |justification: &str| pb::OverrideGateRequest {
        name: op_name.clone(),
        justification: justification.into(),
        request_id: String::new(),
    };
    let err = app
        .operations()
        .override_gate(authed(&t.admin, request("   ")))
        .await
        .expect_err("no justification");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert_eq!(violated_fields(&err), vec!["justification"]);
    let err = app
        .operations()
        .override_gate(authed(&t.viewer, request("because")))
        .await
        .expect_err("a viewer may not");
    assert_eq!(err.code(), tonic::Code::PermissionDenied);

    let justification = "yellow is expected until logs-7 finishes restoring";
    let queued = app
        .operations()
        .override_gate(authed(&t.admin, request(justification)))
        .await
        .expect("override")
        .into_inner()
        .operation
        .expect("operation");
    assert_eq!(queued.state, pb::OperationState::Queued as i32);
    let granted = queued.gate_override.expect("gate_override");
    assert_eq!(granted.stage, "health_gate");
    assert_eq!(granted.principal, t.admin_key_name);
    assert!(granted.check.contains("logs-7"), "{}", granted.check);

    // Still yellow, the operation passes the gate and finishes; the cluster
    // says what is true (READY, health YELLOW, as the observation judges a
    // yellow cluster too), and the override is spent.
    let done = app.wait_operation(&op_name, LONG, |o| o.done).await;
    assert_eq!(
        done.state,
        pb::OperationState::Succeeded as i32,
        "{done:#?}"
    );
    assert_eq!(done.gate_override, None);
    let gate = done
        .stages
        .iter()
        .find(|s| s.name == "health_gate")
        .expect("health_gate stage");
    assert_eq!(gate.state, pb::StageState::Succeeded as i32);
    assert!(gate.message.contains(justification), "{}", gate.message);
    let c = app
        .wait_cluster(&name, LONG, |c| {
            c.status
                .as_ref()
                .is_some_and(|s| s.current_operation.is_empty())
                && state(c) == pb::ClusterState::Ready as i32
        })
        .await;
    assert_eq!(
        c.status.as_ref().map(|s| s.health),
        Some(pb::ClusterHealth::Yellow as i32)
    );

    // The event log has it, with the key and the justification.
    let mut watch = app
        .clusters()
        .watch_cluster(authed(
            &t.viewer,
            pb::WatchClusterRequest {
                name: name.clone(),
                since_revision: 1,
            },
        ))
        .await
        .expect("watch")
        .into_inner();
    let event = loop {
        let msg = tokio::time::timeout(LONG, watch.next())
            .await
            .expect("an override event")
            .expect("open")
            .expect("ok");
        if let Some(pb::watch_cluster_response::Payload::Event(e)) = msg.payload
            && e.r#type == pb::ClusterEventType::GateOverridden as i32
        {
            break e;
        }
    };
    for part in [
        t.admin_key_name.as_str(),
        justification,
        "health_gate",
        "logs-7",
        op_name.as_str(),
    ] {
        assert!(event.message.contains(part), "{part}: {}", event.message);
    }

    // Only a STALLED operation's gate can be overridden.
    let err = app
        .operations()
        .override_gate(authed(&t.admin, request("again")))
        .await
        .expect_err("not stalled");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    let (_, subject, description) = precondition(&err);
    assert_eq!(subject, op_name);
    assert!(description.contains("SUCCEEDED"), "{description}");
    app.stop().await;
}

#[tokio::test]
async fn an_update_supersedes_a_stalled_operation() {
    let (app, sim) = spawn_app_with_workers(1, SimConfig::default(), |c| {
        c.worker.gate_timeout_seconds = 1
    })
    .await;
    let t = app.tenant("search").await;
    let created = app.create_cluster(&t.admin, "search", "logs", 3).await;
    let cluster = created.cluster.expect("c");
    let name = cluster.name.clone();
    sim.force_health(uid(&cluster), Some((Health::Yellow, "index logs-7")))
        .await;
    let stalled = created.operation.expect("op").name;
    app.wait_operation(&stalled, LONG, |o| {
        o.state == pb::OperationState::Stalled as i32
    })
    .await;

    // The tenant fixes what held the gate with a new spec.
    sim.force_health(uid(&cluster), None).await;
    let mut resize = pb::UpdateClusterRequest {
        cluster: Some(pb::Cluster {
            name: name.clone(),
            spec: Some(spec(4)),
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["spec.node_sets".into()],
        }),
        ..Default::default()
    };
    resize.request_id = uuid::Uuid::new_v4().to_string();
    let updated = app
        .clusters()
        .update_cluster(authed(&t.admin, resize))
        .await
        .expect("update")
        .into_inner();
    let carried = updated.operation.expect("operation").name;
    assert_ne!(carried, stalled);
    assert_eq!(
        updated
            .cluster
            .as_ref()
            .and_then(|c| c.status.as_ref())
            .map(|s| s.current_operation.clone()),
        Some(carried.clone()),
        "the new update is current at once"
    );
    let old = app.wait_operation(&stalled, LONG, |o| o.done).await;
    assert_eq!(old.state, pb::OperationState::Cancelled as i32);
    let new = app.wait_operation(&carried, LONG, |o| o.done).await;
    assert_eq!(new.state, pb::OperationState::Succeeded as i32, "{new:#?}");
    let ready = app
        .wait_cluster(&name, LONG, |c| state(c) == pb::ClusterState::Ready as i32)
        .await;
    let status = ready.status.expect("status");
    assert_eq!(status.observed_generation, 2);
    assert!(!status.conditions.iter().any(|c| c.r#type == "Stalled"));
    app.stop().await;
}
