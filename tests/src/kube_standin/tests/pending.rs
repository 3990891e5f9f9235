//! A controller run looks only at what changed or is due; these check that reconciling
//! everything else would not have changed anything, at many moments of a busy workload.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use super::*;

/// Every few milliseconds: a run of the controllers at `now`, then every StatefulSet and
/// budget reconciled at the same `now`, which must write nothing.
fn check_settled(
    s: &KubeStandin,
    stop: Arc<AtomicBool>,
    checks: Arc<AtomicUsize>,
) -> std::thread::JoinHandle<()> {
    let shared = s.shared.clone();
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            {
                let mut st = shared.lock();
                let now = Instant::now();
                st.tick_at(now);
                let rv = st.rv;
                for (ns, name) in st.names(crate::kube_standin::resources::STS) {
                    st.reconcile_sts(&ns, &name, now);
                }
                for (ns, name) in st.names(crate::kube_standin::resources::PDB) {
                    st.reconcile_pdb(&ns, &name);
                }
                assert_eq!(
                    st.rv, rv,
                    "a StatefulSet or budget left out of a run was not settled"
                );
            }
            checks.fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(2));
        }
    })
}

#[tokio::test]
async fn a_run_leaves_nothing_unsettled() {
    let s = KubeStandin::start(Duration::from_millis(30)).await;
    let (stop, checks) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicUsize::new(0)),
    );
    let checker = check_settled(&s, stop.clone(), checks.clone());
    let client = s.client();
    namespace(&client, "eq").await;
    let sts: Api<StatefulSet> = Api::namespaced(client.clone(), "eq");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "eq");
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), "eq");
    let variants = [
        ("par", json!({})),
        ("seq", json!({ "podManagementPolicy": "OrderedReady" })),
        (
            "ondel",
            json!({ "podManagementPolicy": "OrderedReady", "updateStrategy": { "type": "OnDelete" } }),
        ),
        (
            "part",
            json!({ "updateStrategy": { "type": "RollingUpdate", "rollingUpdate": { "partition": 1 } } }),
        ),
    ];
    for (name, spec) in &variants {
        let mut o = serde_json::to_value(statefulset(name, 3, "es:1")).unwrap();
        merge(&mut o["spec"], spec);
        sts.patch(name, &ssa(), &Patch::Apply(&o)).await.unwrap();
        let pdb = json!({
            "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": { "name": name },
            "spec": { "maxUnavailable": "34%", "selector": { "matchLabels": { "esaas.io/node-set": name } } },
        });
        pdbs.patch(name, &ssa(), &Patch::Apply(&pdb)).await.unwrap();
    }
    let all_ready = async |replicas: i32| {
        eventually(Duration::from_secs(20), async || {
            let list = sts.list(&ListParams::default()).await.unwrap();
            list.items
                .iter()
                .all(|o| o.status.as_ref().and_then(|st| st.ready_replicas) == Some(replicas))
                .then_some(())
        })
        .await
    };
    all_ready(3).await;
    for (name, _) in &variants {
        let patch = json!({ "spec": { "replicas": 4, "template": { "spec": { "containers": [{ "name": "elasticsearch", "image": "es:2" }] } } } });
        sts.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    pods.delete("ondel-0", &DeleteParams::default())
        .await
        .unwrap();
    pods.delete("seq-1", &DeleteParams::default())
        .await
        .unwrap();
    all_ready(4).await;
    for (name, _) in &variants {
        let patch = json!({ "spec": { "replicas": 2 } });
        sts.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
    }
    all_ready(2).await;
    let orphan = DeleteParams {
        propagation_policy: Some(kube::api::PropagationPolicy::Orphan),
        ..DeleteParams::default()
    };
    sts.delete("par", &orphan).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    Api::<Namespace>::all(client.clone())
        .delete("eq", &DeleteParams::default())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    stop.store(true, Ordering::Relaxed);
    checker.join().expect("every run left everything settled");
    assert!(checks.load(Ordering::Relaxed) > 50, "too few checks");
}

fn merge(target: &mut Value, patch: &Value) {
    if let (Some(t), Some(p)) = (target.as_object_mut(), patch.as_object()) {
        for (k, v) in p {
            match t.get_mut(k) {
                Some(existing) if existing.is_object() && v.is_object() => merge(existing, v),
                _ => {
                    t.insert(k.clone(), v.clone());
                }
            }
        }
    }
}
