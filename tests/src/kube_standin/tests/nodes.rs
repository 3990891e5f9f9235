//! Nodes: a pod goes only to a Ready, schedulable node of its volume's zone that takes it
//! (selector, taints, anti-affinity), else stays Pending; eviction honours the budget; a
//! pod of a node that goes is made again.

use super::*;

fn node(name: &str, zone: &str, ready: bool, cordoned: bool) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": { "name": name, "labels": {
            "topology.kubernetes.io/zone": zone, "kubernetes.io/hostname": name, "pool": "es",
        }},
        "spec": {
            "unschedulable": cordoned,
            "taints": [{ "key": "dedicated", "value": "es", "effect": "NoSchedule" }],
        },
        "status": { "conditions": [{ "type": "Ready", "status": if ready { "True" } else { "False" } }] },
    })
}

/// `name` → node, for the pods of `sts` (None: Pending).
fn bindings(s: &KubeStandin) -> std::collections::BTreeMap<String, Option<String>> {
    s.objects("pods")
        .iter()
        .map(|p| {
            (
                p["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                p["spec"]["nodeName"].as_str().map(str::to_string),
            )
        })
        .collect()
}

#[tokio::test]
async fn pods_go_only_to_ready_schedulable_nodes_of_their_zone_one_per_node() {
    let s = KubeStandin::start(Duration::from_millis(50)).await;
    let client = s.client();
    namespace(&client, "t").await;
    let classes: Api<k8s_openapi::api::storage::v1::StorageClass> = Api::all(client.clone());
    classes
        .create(
            &PostParams::default(),
            &typed(json!({
                "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
                "metadata": { "name": "gp3-zone-a" },
                "provisioner": "ebs.csi.aws.com",
                "volumeBindingMode": "WaitForFirstConsumer",
                "allowedTopologies": [{ "matchLabelExpressions": [
                    { "key": "topology.ebs.csi.aws.com/zone", "values": ["zone-a"] }]}],
            })),
        )
        .await
        .expect("class");
    let nodes = s.node_api();
    nodes.put_node(node("b1", "zone-b", true, false));
    let mut sts = serde_json::to_value(statefulset("es", 2, "es:1")).expect("json");
    sts["spec"]["volumeClaimTemplates"][0]["spec"]["storageClassName"] = json!("gp3-zone-a");
    sts["spec"]["template"]["spec"]["nodeSelector"] = json!({ "pool": "es" });
    sts["spec"]["template"]["spec"]["tolerations"] =
        json!([{ "key": "dedicated", "operator": "Equal", "value": "es", "effect": "NoSchedule" }]);
    sts["spec"]["template"]["spec"]["affinity"] = json!({ "podAntiAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": [{
            "labelSelector": { "matchLabels": { "esaas.io/node-set": "es" } },
            "topologyKey": "kubernetes.io/hostname",
        }],
    }});
    let api: Api<StatefulSet> = Api::namespaced(client.clone(), "t");
    api.create(&PostParams::default(), &typed(sts))
        .await
        .expect("sts");

    // Only a node of another zone: both Pending, as kube-scheduler leaves them.
    let pending = eventually(Duration::from_secs(5), async || {
        let pods = s.objects("pods");
        (pods.len() == 2).then_some(pods)
    })
    .await;
    for p in &pending {
        assert_eq!(p["status"]["phase"], "Pending", "{p}");
        assert_eq!(p["status"]["conditions"][0]["reason"], "Unschedulable");
        assert!(p["spec"]["nodeName"].is_null());
    }
    // A node of the zone that is not Ready, and one cordoned: still nothing.
    nodes.put_node(node("a1", "zone-a", false, false));
    nodes.put_node(node("a2", "zone-a", true, true));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        bindings(&s).values().all(Option::is_none),
        "{:?}",
        bindings(&s)
    );
    // a1 Ready: one pod there; the other may not share its node (anti-affinity).
    nodes.put_node(node("a1", "zone-a", true, false));
    eventually(Duration::from_secs(5), async || {
        let b = bindings(&s);
        (b.values().filter(|n| n.as_deref() == Some("a1")).count() == 1
            && b.values().filter(|n| n.is_none()).count() == 1)
            .then_some(())
    })
    .await;
    // a2 uncordoned: the second goes there; both turn ready.
    nodes.put_node(node("a2", "zone-a", true, false));
    eventually(Duration::from_secs(5), async || {
        let st = api.get("es").await.ok()?.status?;
        (st.ready_replicas == Some(2)).then_some(())
    })
    .await;
    let placed: Vec<String> = s.placements().iter().map(|p| p.zone.clone()).collect();
    assert_eq!(placed, ["zone-a", "zone-a"]);

    // A budget of one: the first eviction passes, the next waits for the pod to be back.
    let budgets: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), "t");
    budgets
        .create(
            &PostParams::default(),
            &typed(json!({
                "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
                "metadata": { "name": "es" },
                "spec": { "maxUnavailable": 1, "selector": { "matchLabels": { "esaas.io/node-set": "es" } } },
            })),
        )
        .await
        .expect("pdb");
    nodes.evict("t", "es-0").expect("the first eviction");
    let refused = nodes.evict("t", "es-1").expect_err("a second one at once");
    assert!(refused.contains("disruption budget"), "{refused}");

    // A node that goes takes its pod; the StatefulSet makes it again, Pending with no room.
    let before = bindings(&s);
    let on_a1 = before
        .iter()
        .find(|(_, n)| n.as_deref() == Some("a1"))
        .map(|(p, _)| p.clone());
    nodes.remove_node("a1");
    if let Some(pod) = on_a1 {
        eventually(Duration::from_secs(5), async || {
            (bindings(&s).get(&pod) == Some(&None)).then_some(())
        })
        .await;
    }
}
