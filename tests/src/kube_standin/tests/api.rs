use super::*;

#[tokio::test]
async fn missing_objects_are_404_as_kubernetes_answers() {
    let s = KubeStandin::start(Duration::ZERO).await;
    let client = s.client();
    let sts: Api<StatefulSet> = Api::namespaced(client.clone(), "default");
    let st = api_status(sts.get("nope").await.expect_err("404"));
    assert_eq!((st.code, st.reason.as_str()), (404, "NotFound"));
    assert_eq!(st.message, "statefulsets.apps \"nope\" not found");
    let d = st.details.expect("details");
    assert_eq!(
        (d.name.as_str(), d.group.as_str(), d.kind.as_str()),
        ("nope", "apps", "statefulsets")
    );
    assert!(sts.get_opt("nope").await.expect("get_opt").is_none());

    let st = api_status(
        sts.delete("nope", &DeleteParams::default())
            .await
            .expect_err("delete 404"),
    );
    assert_eq!((st.code, st.reason.as_str()), (404, "NotFound"));

    // A write into a namespace that does not exist: NotFound for the namespace.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "ghost");
    let st = api_status(
        secrets
            .patch("x", &ssa(), &Patch::Apply(secret("x", json!({}))))
            .await
            .expect_err("no namespace"),
    );
    assert_eq!(
        (st.code, st.message.as_str()),
        (404, "namespaces \"ghost\" not found")
    );

    let (code, body) = raw(
        &s,
        "GET",
        "/apis/apps/v1/namespaces/default/deployments",
        None,
        "",
    )
    .await;
    assert_eq!(
        (code, body["kind"].as_str(), body["reason"].as_str()),
        (404, Some("Status"), Some("NotFound"))
    );
    let (code, body) = raw(
        &s,
        "POST",
        "/api/v1/namespaces/default/pods",
        Some("application/json"),
        "{}",
    )
    .await;
    assert_eq!(
        (code, body["reason"].as_str()),
        (405, Some("MethodNotAllowed"))
    );
}

#[tokio::test]
async fn stale_resource_version_is_a_conflict() {
    let s = KubeStandin::start(Duration::ZERO).await;
    let client = s.client();
    namespace(&client, "t").await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "t");
    let first = secrets
        .patch("s", &ssa(), &Patch::Apply(secret("s", json!({ "v": "1" }))))
        .await
        .unwrap();
    secrets
        .patch("s", &ssa(), &Patch::Apply(secret("s", json!({ "v": "2" }))))
        .await
        .unwrap();

    let mut stale = secret("s", json!({ "v": "3" }));
    stale.metadata.resource_version = first.metadata.resource_version.clone();
    let st = api_status(
        secrets
            .patch("s", &ssa(), &Patch::Apply(&stale))
            .await
            .expect_err("409"),
    );
    assert_eq!((st.code, st.reason.as_str()), (409, "Conflict"));
    assert_eq!(
        st.message,
        "Operation cannot be fulfilled on secrets \"s\": the object has been modified; please apply your changes to the latest version and try again"
    );
    let mut old = first.clone();
    old.metadata.managed_fields = None;
    let st = api_status(
        secrets
            .replace("s", &PostParams::default(), &old)
            .await
            .expect_err("put 409"),
    );
    assert_eq!(st.code, 409);
    let st = api_status(
        secrets
            .patch(
                "s",
                &PatchParams::default(),
                &Patch::Merge(
                    json!({ "metadata": { "resourceVersion": first.metadata.resource_version } }),
                ),
            )
            .await
            .expect_err("merge 409"),
    );
    assert_eq!(st.code, 409);
    // The current one goes through.
    let current = secrets.get("s").await.unwrap();
    let mut fresh = secret("s", json!({ "v": "4" }));
    fresh.metadata.resource_version = current.metadata.resource_version.clone();
    secrets
        .patch("s", &ssa(), &Patch::Apply(&fresh))
        .await
        .expect("fresh rv");
}

#[tokio::test]
async fn create_json_patch_strategic_patch_and_dry_run() {
    let s = KubeStandin::start(Duration::ZERO).await;
    let client = s.client();
    namespace(&client, "t").await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "t");
    let cm: ConfigMap = typed(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": { "name": "c" }, "data": { "a": "1" },
    }));
    let created = cms
        .create(&PostParams::default(), &cm)
        .await
        .expect("create");
    let mf = created.metadata.managed_fields.unwrap();
    assert_eq!(mf[0].operation.as_deref(), Some("Update"));
    let st = api_status(
        cms.create(&PostParams::default(), &cm)
            .await
            .expect_err("exists"),
    );
    assert_eq!((st.code, st.reason.as_str()), (409, "AlreadyExists"));

    let path = "/api/v1/namespaces/t/configmaps/c";
    let ops =
        r#"[{"op":"test","path":"/data/a","value":"1"},{"op":"add","path":"/data/b","value":"2"}]"#;
    let (code, body) = raw(&s, "PATCH", path, Some("application/json-patch+json"), ops).await;
    assert_eq!((code, &body["data"]["b"]), (200, &json!("2")), "{body}");
    let failing = r#"[{"op":"test","path":"/data/a","value":"9"}]"#;
    let (code, _) = raw(
        &s,
        "PATCH",
        path,
        Some("application/json-patch+json"),
        failing,
    )
    .await;
    assert_eq!(code, 422);

    let patched = cms
        .patch(
            "c",
            &PatchParams::default(),
            &Patch::Strategic(json!({ "data": { "c": "3", "a": null } })),
        )
        .await
        .unwrap();
    let data = patched.data.unwrap();
    assert_eq!(data.keys().collect::<Vec<_>>(), ["b", "c"]);

    let before = cms.get("c").await.unwrap();
    let dry = cms
        .patch(
            "c",
            &PatchParams::apply("esaas").force().dry_run(),
            &Patch::Apply(&cm),
        )
        .await
        .unwrap();
    assert_eq!(dry.data.unwrap()["a"], "1");
    assert_eq!(
        cms.get("c").await.unwrap(),
        before,
        "dry run stores nothing"
    );

    let generated: ConfigMap = typed(json!({
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "generateName": "gen-" },
    }));
    let made = cms
        .create(&PostParams::default(), &generated)
        .await
        .unwrap();
    assert!(made.metadata.name.unwrap().starts_with("gen-"));

    let bad: ConfigMap = typed(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": { "name": "Bad_Name", "labels": { "ok": "not ok!" } },
    }));
    let st = api_status(
        cms.create(&PostParams::default(), &bad)
            .await
            .expect_err("invalid"),
    );
    assert_eq!((st.code, st.reason.as_str()), (422, "Invalid"));
    assert!(st.message.starts_with("ConfigMap \"Bad_Name\" is invalid: [metadata.name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain"), "{}", st.message);
}

#[tokio::test]
async fn deleting_a_namespace_deletes_what_it_holds() {
    let s = KubeStandin::start(Duration::ZERO).await;
    let client = s.client();
    namespace(&client, "doomed").await;
    namespace(&client, "kept").await;
    for ns in ["doomed", "kept"] {
        let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
        secrets
            .patch("s", &ssa(), &Patch::Apply(secret("s", json!({}))))
            .await
            .unwrap();
        let sts: Api<StatefulSet> = Api::namespaced(client.clone(), ns);
        sts.patch("es", &ssa(), &Patch::Apply(statefulset("es", 2, "es:1")))
            .await
            .unwrap();
    }
    assert_eq!(s.objects("pvc").len(), 4);
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let answer = namespaces
        .delete("doomed", &DeleteParams::default())
        .await
        .unwrap();
    let ns = answer.left().expect("the namespace");
    assert_eq!(ns.status.unwrap().phase.as_deref(), Some("Terminating"));
    let st = api_status(namespaces.get("doomed").await.expect_err("gone"));
    assert_eq!(st.code, 404);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "doomed");
    assert_eq!(
        api_status(secrets.get("s").await.expect_err("gone")).code,
        404
    );
    for kind in ["secrets", "statefulsets", "pods", "pvc"] {
        assert!(
            s.objects(kind)
                .iter()
                .all(|o| o["metadata"]["namespace"] == "kept"),
            "{kind} left in the deleted namespace"
        );
    }
    assert_eq!(s.objects("pods").len(), 2);
    assert_eq!(
        api_status(
            namespaces
                .delete("doomed", &DeleteParams::default())
                .await
                .expect_err("404")
        )
        .code,
        404
    );
}

#[tokio::test]
async fn status_subresource_and_immutable_fields() {
    let s = KubeStandin::start(Duration::ZERO).await;
    let client = s.client();
    namespace(&client, "t").await;
    let services: Api<Service> = Api::namespaced(client.clone(), "t");
    let svc: Service = typed(json!({
        "apiVersion": "v1", "kind": "Service", "metadata": { "name": "es-http" },
        "spec": { "selector": { "a": "b" }, "ports": [{ "name": "https", "port": 9200 }] },
    }));
    let created = services
        .patch("es-http", &ssa(), &Patch::Apply(&svc))
        .await
        .unwrap();
    let spec = created.spec.unwrap();
    assert!(
        spec.cluster_ip
            .as_deref()
            .is_some_and(|ip| ip.starts_with("10.96."))
    );
    assert_eq!(spec.ports.unwrap()[0].protocol.as_deref(), Some("TCP"));
    let patched = services
        .patch_status("es-http", &PatchParams::default(), &Patch::Merge(json!({ "status": { "loadBalancer": { "ingress": [{ "ip": "1.2.3.4" }] } }, "spec": { "type": "NodePort" } })))
        .await
        .unwrap();
    assert_eq!(
        patched.spec.unwrap().type_.as_deref(),
        Some("ClusterIP"),
        "status ignores spec"
    );
    assert!(
        patched
            .status
            .unwrap()
            .load_balancer
            .unwrap()
            .ingress
            .is_some()
    );

    let sts: Api<StatefulSet> = Api::namespaced(client.clone(), "t");
    sts.patch("es", &ssa(), &Patch::Apply(statefulset("es", 1, "es:1")))
        .await
        .unwrap();
    let mut changed = statefulset("es", 1, "es:1");
    changed.spec.volume_claim_templates.as_mut().unwrap()[0]
        .spec
        .as_mut()
        .unwrap()
        .storage_class_name = Some("gp2".into());
    let st = api_status(
        sts.patch("es", &ssa(), &Patch::Apply(&changed))
            .await
            .expect_err("forbidden"),
    );
    assert_eq!((st.code, st.reason.as_str()), (422, "Invalid"));
    assert!(
        st.message.starts_with(
            "StatefulSet.apps \"es\" is invalid: spec: Forbidden: updates to statefulset spec"
        ),
        "{}",
        st.message
    );

    // Scale subresource.
    let scale = sts.get_scale("es").await.unwrap();
    assert_eq!(scale.spec.unwrap().replicas, Some(1));
    sts.patch_scale(
        "es",
        &PatchParams::default(),
        &Patch::Merge(json!({ "spec": { "replicas": 2 } })),
    )
    .await
    .unwrap();
    assert_eq!(sts.get("es").await.unwrap().spec.replicas, Some(2));

    // PVC storage may grow (once its class allows it; see tests/volumes.rs), not shrink.
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "t");
    let grow = json!({ "spec": { "resources": { "requests": { "storage": "20Gi" } } } });
    let classes: Api<k8s_openapi::api::storage::v1::StorageClass> = Api::all(client.clone());
    classes
        .create(
            &PostParams::default(),
            &typed(json!({
                "metadata": { "name": "gp3" },
                "provisioner": "ebs.csi.aws.com",
                "allowVolumeExpansion": true,
            })),
        )
        .await
        .unwrap();
    let grown = pvcs
        .patch("data-es-0", &PatchParams::default(), &Patch::Merge(&grow))
        .await
        .unwrap();
    assert_eq!(
        grown.spec.unwrap().resources.unwrap().requests.unwrap()["storage"].0,
        "20Gi"
    );
    let shrink = json!({ "spec": { "resources": { "requests": { "storage": "5Gi" } } } });
    let st = api_status(
        pvcs.patch("data-es-0", &PatchParams::default(), &Patch::Merge(&shrink))
            .await
            .expect_err("shrink"),
    );
    assert_eq!(st.code, 422);
}
