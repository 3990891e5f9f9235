//! Volumes: StorageClasses and VolumeAttributesClasses, claims that grow and change class
//! later (and only when allowed), and a StatefulSet replaced around its pods.

use super::*;
use k8s_openapi::api::storage::v1::{StorageClass, VolumeAttributesClass};

fn vac(name: &str, iops: &str) -> VolumeAttributesClass {
    typed(json!({
        "metadata": { "name": name },
        "driverName": "ebs.csi.aws.com",
        "parameters": { "type": "gp3", "iops": iops },
    }))
}

/// Polls `get` until `done` holds, for at most 5 s.
async fn eventually<T>(mut get: impl AsyncFnMut() -> T, done: impl Fn(&T) -> bool) -> T {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let v = get().await;
        if done(&v) || Instant::now() > deadline {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn classes_are_cluster_wide_and_their_parameters_immutable() {
    let s = KubeStandin::start(Duration::ZERO).await;
    let client = s.client();
    // The class deploy/ installs is there, expandable.
    let classes: Api<StorageClass> = Api::all(client.clone());
    let gp3 = classes.get("esaas-gp3").await.unwrap();
    assert_eq!(gp3.allow_volume_expansion, Some(true));
    let st = api_status(
        classes
            .patch(
                "esaas-gp3",
                &PatchParams::default(),
                &Patch::Merge(json!({ "parameters": { "type": "io2" } })),
            )
            .await
            .expect_err("immutable"),
    );
    assert_eq!((st.code, st.reason.as_str()), (422, "Invalid"));
    assert!(
        st.message.contains("updates to parameters are forbidden"),
        "{}",
        st.message
    );

    let vacs: Api<VolumeAttributesClass> = Api::all(client.clone());
    vacs.patch("fast", &ssa(), &Patch::Apply(vac("fast", "6000")))
        .await
        .unwrap();
    // Applying the same again is a no-op; other parameters are refused.
    vacs.patch("fast", &ssa(), &Patch::Apply(vac("fast", "6000")))
        .await
        .unwrap();
    let st = api_status(
        vacs.patch("fast", &ssa(), &Patch::Apply(vac("fast", "9000")))
            .await
            .expect_err("immutable"),
    );
    assert_eq!(st.code, 422);
    assert!(
        st.message.contains("parameters: Forbidden"),
        "{}",
        st.message
    );
    let st = api_status(
        vacs.create(
            &PostParams::default(),
            &typed(json!({ "metadata": { "name": "empty" }, "driverName": "ebs.csi.aws.com" })),
        )
        .await
        .expect_err("no parameters"),
    );
    assert_eq!(st.code, 422);
}

#[tokio::test]
async fn a_claim_grows_and_changes_class_after_a_delay_and_only_once_per_six_hours() {
    let s = KubeStandin::start(Duration::from_millis(300)).await;
    let client = s.client();
    namespace(&client, "t").await;
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "t");
    let claim = |class: &str, sc: &str| -> PersistentVolumeClaim {
        typed(json!({
            "metadata": { "name": format!("data-{sc}") },
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": sc,
                "volumeAttributesClassName": class,
                "resources": { "requests": { "storage": "10Gi" } },
            },
        }))
    };
    let classes: Api<k8s_openapi::api::storage::v1::StorageClass> = Api::all(client.clone());
    classes
        .create(
            &PostParams::default(),
            &typed(json!({ "metadata": { "name": "fixed" }, "provisioner": "ebs.csi.aws.com" })),
        )
        .await
        .unwrap();
    pvcs.create(&PostParams::default(), &claim("slow", "esaas-gp3"))
        .await
        .unwrap();
    pvcs.create(&PostParams::default(), &claim("slow", "fixed"))
        .await
        .unwrap();
    // A class that does not exist: the claim is never provisioned, stays Pending.
    let pending = pvcs
        .create(&PostParams::default(), &claim("slow", "missing"))
        .await
        .unwrap();
    assert_eq!(pending.status.unwrap().phase.as_deref(), Some("Pending"));
    assert!(pending.spec.unwrap().volume_name.is_none());
    // A class that does not allow expansion: 403, as the resize admission plugin answers.
    let grow = json!({ "spec": { "resources": { "requests": { "storage": "20Gi" } } } });
    let st = api_status(
        pvcs.patch("data-fixed", &PatchParams::default(), &Patch::Merge(&grow))
            .await
            .expect_err("not expandable"),
    );
    assert_eq!((st.code, st.reason.as_str()), (403, "Forbidden"));
    assert!(st.message.contains("must support resize"), "{}", st.message);

    // Size and class in one patch: asked at once, reached later.
    let change = json!({ "spec": {
        "resources": { "requests": { "storage": "20Gi" } },
        "volumeAttributesClassName": "fast",
    } });
    let asked = pvcs
        .patch(
            "data-esaas-gp3",
            &PatchParams::default(),
            &Patch::Merge(&change),
        )
        .await
        .unwrap();
    let status = asked.status.unwrap();
    assert_eq!(status.capacity.unwrap()["storage"].0, "10Gi");
    assert_eq!(
        status.conditions.unwrap()[0].type_,
        "FileSystemResizePending"
    );
    assert_eq!(
        status.current_volume_attributes_class_name.as_deref(),
        Some("slow")
    );
    assert_eq!(status.modify_volume_status.unwrap().status, "InProgress");
    let done = eventually(
        async || pvcs.get("data-esaas-gp3").await.unwrap(),
        |p| {
            p.status
                .as_ref()
                .and_then(|s| s.capacity.as_ref())
                .is_some_and(|c| c["storage"].0 == "20Gi")
        },
    )
    .await;
    let status = done.status.unwrap();
    assert_eq!(status.capacity.unwrap()["storage"].0, "20Gi");
    assert!(status.conditions.is_none_or(|c| c.is_empty()));
    assert_eq!(
        status.current_volume_attributes_class_name.as_deref(),
        Some("fast")
    );
    assert!(status.modify_volume_status.is_none());

    // A second modification inside EBS's six hours is taken but not reached.
    let again = json!({ "spec": { "resources": { "requests": { "storage": "30Gi" } } } });
    pvcs.patch(
        "data-esaas-gp3",
        &PatchParams::default(),
        &Patch::Merge(&again),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(900)).await;
    let waiting = pvcs.get("data-esaas-gp3").await.unwrap().status.unwrap();
    assert_eq!(waiting.capacity.unwrap()["storage"].0, "20Gi");
    assert_eq!(
        waiting.conditions.unwrap()[0].type_,
        "FileSystemResizePending"
    );
}

#[tokio::test]
async fn a_stateful_set_deleted_with_orphans_is_replaced_around_its_pods() {
    let s = KubeStandin::start(Duration::ZERO).await;
    let client = s.client();
    namespace(&client, "t").await;
    let sts: Api<StatefulSet> = Api::namespaced(client.clone(), "t");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "t");
    sts.patch("es", &ssa(), &Patch::Apply(statefulset("es", 2, "es:1")))
        .await
        .unwrap();
    let uids = async || {
        let mut v: Vec<(String, String)> = pods
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|p| (p.metadata.name.unwrap(), p.metadata.uid.unwrap()))
            .collect();
        v.sort();
        v
    };
    let before = eventually(uids, |v| v.len() == 2).await;
    assert_eq!(before.len(), 2);

    // The claim template cannot change on the object ...
    let mut bigger = statefulset("es", 2, "es:1");
    bigger.spec.volume_claim_templates.as_mut().unwrap()[0]
        .spec
        .as_mut()
        .unwrap()
        .resources
        .as_mut()
        .unwrap()
        .requests = Some(
        [(
            "storage".to_string(),
            k8s_openapi::apimachinery::pkg::api::resource::Quantity("20Gi".into()),
        )]
        .into(),
    );
    let st = api_status(
        sts.patch("es", &ssa(), &Patch::Apply(&bigger))
            .await
            .expect_err("immutable claim template"),
    );
    assert_eq!(st.code, 422);
    // ... so the object goes, its pods stay, and the new one adopts them unrestarted.
    let orphan = DeleteParams {
        propagation_policy: Some(kube::api::PropagationPolicy::Orphan),
        ..DeleteParams::default()
    };
    sts.delete("es", &orphan).await.unwrap();
    let orphans = pods.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(orphans.len(), 2);
    assert!(
        orphans
            .iter()
            .all(|p| p.metadata.owner_references.is_none())
    );
    sts.patch("es", &ssa(), &Patch::Apply(&bigger))
        .await
        .unwrap();
    let after = eventually(uids, |v| v.len() == 2).await;
    assert_eq!(after, before, "the same pods, not restarted");
    let adopted = pods.get("es-0").await.unwrap();
    let owner = adopted.metadata.owner_references.unwrap();
    assert_eq!(
        owner[0].uid,
        sts.get("es").await.unwrap().metadata.uid.unwrap()
    );
    let status = eventually(
        async || sts.get("es").await.unwrap().status.unwrap(),
        |s| s.ready_replicas == Some(2),
    )
    .await;
    assert_eq!(status.ready_replicas, Some(2));
    assert_eq!(status.current_revision, status.update_revision);
}
