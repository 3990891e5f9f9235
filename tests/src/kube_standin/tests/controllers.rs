use std::collections::BTreeMap;

use super::*;
use crate::kube_standin::pods::pod_ready;

#[tokio::test]
async fn statefulset_turns_ready_after_the_delay_with_a_claim_per_replica() {
    let s = KubeStandin::start(Duration::from_millis(200)).await;
    let client = s.client();
    namespace(&client, "t").await;
    let sts: Api<StatefulSet> = Api::namespaced(client.clone(), "t");
    // Every pod is created after this instant, so none is ready before it + 200 ms.
    let started = Instant::now();
    let applied = sts
        .patch(
            "es-data",
            &ssa(),
            &Patch::Apply(statefulset("es-data", 3, "elasticsearch:8.17.10")),
        )
        .await
        .expect("apply sts");
    assert_eq!(applied.metadata.generation, Some(1));

    let early = sts.get_status("es-data").await.unwrap();
    let read_at = started.elapsed();
    let status = early.status.expect("status");
    assert_eq!(status.replicas, 3);
    if read_at < Duration::from_millis(200) {
        assert_eq!(
            status.ready_replicas.unwrap_or(0),
            0,
            "ready after {read_at:?}"
        );
    }
    assert_eq!(status.observed_generation, Some(1));
    let update = status.update_revision.clone().expect("updateRevision");
    assert!(update.starts_with("es-data-"), "{update}");

    let ready = eventually(Duration::from_secs(10), async || {
        let st = sts.get("es-data").await.unwrap().status.unwrap();
        (st.ready_replicas == Some(3)).then_some(st)
    })
    .await;
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "ready too early"
    );
    assert_eq!(ready.updated_replicas, Some(3));
    assert_eq!(ready.available_replicas, Some(3));
    assert_eq!(ready.current_revision.as_deref(), Some(update.as_str()));

    // Pods, named and labelled as the controller names them.
    let pods: Api<Pod> = Api::namespaced(client.clone(), "t");
    let list = pods
        .list(&ListParams::default().labels("esaas.io/node-set=es-data"))
        .await
        .unwrap();
    let names: Vec<_> = list
        .items
        .iter()
        .map(|p| p.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(names, ["es-data-0", "es-data-1", "es-data-2"]);
    let labels = list.items[0].metadata.labels.clone().unwrap();
    assert_eq!(labels["controller-revision-hash"], update);

    // A claim per replica with the template's and the selector's labels.
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "t");
    let claims = pvcs
        .list(&ListParams::default().labels("esaas.io/cluster=c1"))
        .await
        .unwrap();
    let names: Vec<_> = claims
        .items
        .iter()
        .map(|p| p.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(
        names,
        ["data-es-data-0", "data-es-data-1", "data-es-data-2"]
    );
    assert_eq!(
        claims.items[0].status.as_ref().unwrap().phase.as_deref(),
        Some("Bound")
    );

    // Scale down: pods go, claims stay (Retain).
    let mut smaller = statefulset("es-data", 1, "elasticsearch:8.17.10");
    smaller.metadata.labels = Some([("esaas.io/cluster".to_string(), "c1".to_string())].into());
    let scaled = sts
        .patch("es-data", &ssa(), &Patch::Apply(&smaller))
        .await
        .unwrap();
    assert_eq!(scaled.metadata.generation, Some(2));
    let st = eventually(Duration::from_secs(5), async || {
        let st = sts.get("es-data").await.unwrap().status.unwrap();
        (st.replicas == 1 && st.observed_generation == Some(2)).then_some(st)
    })
    .await;
    assert_eq!(st.ready_replicas, Some(1));
    assert_eq!(
        pods.list(&ListParams::default()).await.unwrap().items.len(),
        1
    );
    assert_eq!(
        pvcs.list(&ListParams::default()).await.unwrap().items.len(),
        3
    );

    // Deleting the StatefulSet keeps the claims too; a label selector deletes them.
    let gone = sts
        .delete("es-data", &DeleteParams::background())
        .await
        .unwrap();
    assert!(gone.is_right(), "a Success Status");
    assert!(
        pods.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert_eq!(
        pvcs.list(&ListParams::default()).await.unwrap().items.len(),
        3
    );
    pvcs.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels("esaas.io/node-set=es-data"),
    )
    .await
    .expect("deletecollection");
    assert!(
        pvcs.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert!(s.objects("PersistentVolumeClaim").is_empty());
}

#[tokio::test]
async fn template_change_rolls_one_pod_at_a_time_from_the_top() {
    let s = KubeStandin::start(Duration::from_millis(100)).await;
    let client = s.client();
    namespace(&client, "t").await;
    let sts: Api<StatefulSet> = Api::namespaced(client.clone(), "t");
    sts.patch(
        "es",
        &ssa(),
        &Patch::Apply(statefulset("es", 3, "es:8.17.0")),
    )
    .await
    .unwrap();
    let old = eventually(Duration::from_secs(5), async || {
        let st = sts.get("es").await.unwrap().status.unwrap();
        (st.ready_replicas == Some(3)).then_some(st.update_revision.unwrap())
    })
    .await;
    let upgraded = sts
        .patch(
            "es",
            &ssa(),
            &Patch::Apply(statefulset("es", 3, "es:8.18.0")),
        )
        .await
        .unwrap();
    assert_eq!(upgraded.metadata.generation, Some(2));
    let done = eventually(Duration::from_secs(10), async || {
        let st = sts.get("es").await.unwrap().status.unwrap();
        (st.current_revision == st.update_revision && st.ready_replicas == Some(3)).then_some(st)
    })
    .await;
    assert_ne!(done.update_revision.as_deref(), Some(old.as_str()));
    assert_eq!(done.updated_replicas, Some(3));
    // Replay the pods' history since the upgrade: each pod is replaced only while all
    // are ready, from the highest ordinal down.
    let pods: Api<Pod> = Api::namespaced(client.clone(), "t");
    let from = upgraded.metadata.resource_version.clone().unwrap();
    let mut events = pods
        .watch(&WatchParams::default().timeout(1), &from)
        .await
        .expect("watch pods")
        .boxed();
    let mut up: BTreeMap<String, bool> = ["es-0", "es-1", "es-2"]
        .map(|n| (n.to_string(), true))
        .into();
    let mut replaced = Vec::new();
    while let Some(ev) = events.try_next().await.expect("event") {
        match ev {
            WatchEvent::Deleted(p) => {
                let n = p.metadata.name.unwrap();
                assert!(
                    up.len() == 3 && up.values().all(|r| *r),
                    "{n} replaced while another pod was down: {up:?}"
                );
                up.remove(&n);
                replaced.push(n);
            }
            WatchEvent::Added(p) | WatchEvent::Modified(p) => {
                let ready = pod_ready(&serde_json::to_value(&p).unwrap());
                up.insert(p.metadata.name.unwrap(), ready);
            }
            WatchEvent::Bookmark(_) => {}
            WatchEvent::Error(e) => panic!("{e:?}"),
        }
        let down = 3 - up.values().filter(|r| **r).count();
        assert!(down <= 1, "more than one pod down: {up:?}");
    }
    assert_eq!(
        replaced,
        ["es-2", "es-1", "es-0"],
        "one pod at a time from the top"
    );
    let pods = s.objects("pods");
    assert!(
        pods.iter()
            .all(|p| p["spec"]["containers"][0]["image"] == "es:8.18.0")
    );

    // A partition holds the lower ordinals back.
    let mut held = statefulset("es", 3, "es:8.19.0");
    held.spec.update_strategy = Some(typed(
        json!({ "type": "RollingUpdate", "rollingUpdate": { "partition": 2 } }),
    ));
    sts.patch("es", &ssa(), &Patch::Apply(&held)).await.unwrap();
    let st = eventually(Duration::from_secs(5), async || {
        let st = sts.get("es").await.unwrap().status.unwrap();
        (st.updated_replicas == Some(1) && st.ready_replicas == Some(3)).then_some(st)
    })
    .await;
    assert_ne!(st.current_revision, st.update_revision);
    tokio::time::sleep(Duration::from_millis(250)).await;
    let pod0 = s.object("pod", "t", "es-0").unwrap();
    assert_eq!(pod0["spec"]["containers"][0]["image"], "es:8.18.0");
    let pod2 = s.object("pod", "t", "es-2").unwrap();
    assert_eq!(pod2["spec"]["containers"][0]["image"], "es:8.19.0");
}

#[tokio::test]
async fn ordered_ready_on_delete_and_disruption_budget() {
    let s = KubeStandin::start(Duration::from_millis(100)).await;
    let client = s.client();
    namespace(&client, "t").await;
    let sts: Api<StatefulSet> = Api::namespaced(client.clone(), "t");
    let ordered = |image: &str| {
        let mut o = statefulset("seq", 3, image);
        o.spec.pod_management_policy = Some("OrderedReady".into());
        o.spec.update_strategy = Some(typed(json!({ "type": "OnDelete" })));
        o
    };
    let started = Instant::now();
    sts.patch("seq", &ssa(), &Patch::Apply(ordered("es:1")))
        .await
        .unwrap();
    let first = sts.get_status("seq").await.unwrap().status.unwrap();
    if started.elapsed() < Duration::from_millis(100) {
        assert_eq!(first.replicas, 1, "OrderedReady starts with one pod");
    }
    eventually(Duration::from_secs(10), async || {
        let st = sts.get("seq").await.unwrap().status.unwrap();
        (st.ready_replicas == Some(3)).then_some(())
    })
    .await;
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "OrderedReady waits for each pod in turn"
    );

    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), "t");
    let pdb: PodDisruptionBudget = typed(json!({
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": { "name": "seq" },
        "spec": { "minAvailable": 2, "selector": { "matchLabels": { "esaas.io/node-set": "seq" } } },
    }));
    pdbs.patch("seq", &ssa(), &Patch::Apply(&pdb))
        .await
        .unwrap();
    let st = eventually(Duration::from_secs(5), async || {
        let st = pdbs.get("seq").await.unwrap().status?;
        (st.expected_pods == Some(3)).then_some(st)
    })
    .await;
    assert_eq!(
        (
            st.current_healthy,
            st.desired_healthy,
            st.disruptions_allowed
        ),
        (Some(3), Some(2), Some(1))
    );

    // OnDelete: a template change waits until a pod is deleted.
    sts.patch("seq", &ssa(), &Patch::Apply(ordered("es:2")))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(250)).await;
    let st = sts.get("seq").await.unwrap().status.unwrap();
    assert_eq!(st.updated_replicas.unwrap_or(0), 0);
    let pods: Api<Pod> = Api::namespaced(client.clone(), "t");
    let old_uid = pods.get("seq-1").await.unwrap().metadata.uid;
    pods.delete("seq-1", &DeleteParams::default())
        .await
        .unwrap();
    let st = eventually(Duration::from_secs(5), async || {
        let st = sts.get("seq").await.unwrap().status.unwrap();
        (st.updated_replicas == Some(1) && st.ready_replicas == Some(3)).then_some(st)
    })
    .await;
    // As in Kubernetes up to 1.35: OnDelete never moves currentRevision.
    assert_ne!(st.current_revision, st.update_revision);
    let pod1 = pods.get("seq-1").await.unwrap();
    assert_ne!(pod1.metadata.uid, old_uid);
    assert_eq!(
        pod1.metadata.labels.unwrap()["controller-revision-hash"],
        st.update_revision.unwrap()
    );
    assert_eq!(s.objects("pvc").len(), 3, "the claims are reused");
    let (code, _) = raw(
        &s,
        "PATCH",
        "/api/v1/namespaces/t/pods/seq-1",
        Some("application/merge-patch+json"),
        "{}",
    )
    .await;
    assert_eq!(code, 405, "pods are the controller's");
}

#[tokio::test]
async fn a_restricted_namespace_gets_no_pods_of_a_template_that_violates_it() {
    let s = KubeStandin::start(Duration::from_millis(10)).await;
    let client = s.client();
    let ns: Namespace = typed(json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": { "name": "r", "labels": { "pod-security.kubernetes.io/enforce": "restricted" } },
    }));
    Api::<Namespace>::all(client.clone())
        .patch("r", &ssa(), &Patch::Apply(&ns))
        .await
        .expect("apply namespace");
    let sts: Api<StatefulSet> = Api::namespaced(client.clone(), "r");
    // The template has no security context at all: admitted as an object, its pods are not.
    sts.patch(
        "es-data",
        &ssa(),
        &Patch::Apply(statefulset("es-data", 2, "elasticsearch:8.17.10")),
    )
    .await
    .expect("a StatefulSet is admitted");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "r");
    assert!(
        pods.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    let refused = s.refused_pods();
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(refused[0].2.contains("restricted"), "{refused:?}");
    assert!(
        refused[0].2.contains("allowPrivilegeEscalation"),
        "{refused:?}"
    );

    // Made compliant, it gets its pods.
    let mut fixed = statefulset("es-data", 2, "elasticsearch:8.17.10");
    let pod = fixed.spec.template.spec.as_mut().expect("pod spec");
    pod.security_context = Some(typed(json!({
        "runAsNonRoot": true, "runAsUser": 1000, "seccompProfile": {"type": "RuntimeDefault"},
    })));
    pod.containers[0].security_context = Some(typed(json!({
        "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]},
    })));
    sts.patch("es-data", &ssa(), &Patch::Apply(fixed))
        .await
        .expect("apply");
    eventually(Duration::from_secs(10), async || {
        let st = sts.get("es-data").await.unwrap().status.unwrap();
        (st.ready_replicas == Some(2)).then_some(())
    })
    .await;
    assert!(s.refused_pods().is_empty());
}

#[tokio::test]
async fn pods_of_a_missing_service_account_are_refused_until_it_exists() {
    let s = KubeStandin::start(Duration::from_millis(10)).await;
    let client = s.client();
    let ns: Namespace = typed(json!({
        "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": "t" },
    }));
    Api::<Namespace>::all(client.clone())
        .patch("t", &ssa(), &Patch::Apply(&ns))
        .await
        .expect("apply namespace");
    let sts: Api<StatefulSet> = Api::namespaced(client.clone(), "t");
    let mut with_account = statefulset("es-data", 1, "elasticsearch:8.17.10");
    if let Some(pod) = with_account.spec.template.spec.as_mut() {
        pod.service_account_name = Some("logs-es".into());
    }
    sts.patch("es-data", &ssa(), &Patch::Apply(&with_account))
        .await
        .expect("a StatefulSet is admitted");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "t");
    assert!(
        pods.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    let refused = s.refused_pods();
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(
        refused[0].2.contains(
            "error looking up service account t/logs-es: serviceaccount \"logs-es\" not found"
        ),
        "{refused:?}"
    );
    // The account created, the controller's next try gets the pod.
    let account: k8s_openapi::api::core::v1::ServiceAccount = typed(json!({
        "apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": { "name": "logs-es", "namespace": "t" },
    }));
    Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(client.clone(), "t")
        .patch("logs-es", &ssa(), &Patch::Apply(&account))
        .await
        .expect("apply the account");
    sts.patch("es-data", &ssa(), &Patch::Apply(&with_account))
        .await
        .expect("apply again");
    eventually(Duration::from_secs(10), async || {
        let st = sts.get("es-data").await.unwrap().status.unwrap();
        (st.ready_replicas == Some(1)).then_some(())
    })
    .await;
    assert!(s.refused_pods().is_empty());
}
