use super::*;

#[tokio::test]
async fn server_side_apply_creates_then_merges_and_records_the_manager() {
    let s = KubeStandin::start(Duration::ZERO).await;
    let client = s.client();
    let ns = namespace(&client, "tenant-a").await;
    assert_eq!(
        ns.metadata.labels.as_ref().unwrap()["kubernetes.io/metadata.name"],
        "tenant-a"
    );
    assert_eq!(ns.status.unwrap().phase.as_deref(), Some("Active"));
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "tenant-a");

    let first = secrets
        .patch(
            "creds",
            &ssa(),
            &Patch::Apply(secret("creds", json!({ "a": "1", "b": "2" }))),
        )
        .await
        .expect("create by apply");
    let uid = first.metadata.uid.clone().expect("uid");
    assert!(first.metadata.creation_timestamp.is_some());
    assert_eq!(first.type_.as_deref(), Some("Opaque"));
    assert_eq!(first.data.as_ref().unwrap()["elastic"].0, b"s3cret");
    let mf = first
        .metadata
        .managed_fields
        .as_ref()
        .expect("managedFields");
    assert_eq!(mf.len(), 1);
    assert_eq!(mf[0].manager.as_deref(), Some("esaas"));
    assert_eq!(mf[0].operation.as_deref(), Some("Apply"));
    assert_eq!(mf[0].api_version.as_deref(), Some("v1"));
    let fields = serde_json::to_value(&mf[0].fields_v1).unwrap();
    assert!(
        fields.pointer("/f:metadata/f:labels/f:a").is_some(),
        "{fields}"
    );

    // The same configuration again is not a write.
    let same = secrets
        .patch(
            "creds",
            &ssa(),
            &Patch::Apply(secret("creds", json!({ "a": "1", "b": "2" }))),
        )
        .await
        .expect("re-apply");
    assert_eq!(rv(&same.metadata), rv(&first.metadata));

    // Another label set: b is no longer applied, so it goes; c arrives.
    let second = secrets
        .patch(
            "creds",
            &ssa(),
            &Patch::Apply(secret("creds", json!({ "a": "1", "c": "3" }))),
        )
        .await
        .expect("apply again");
    assert!(rv(&second.metadata) > rv(&first.metadata));
    assert_eq!(second.metadata.uid.as_deref(), Some(uid.as_str()));
    let labels = second.metadata.labels.unwrap();
    assert_eq!(labels.get("a").map(String::as_str), Some("1"));
    assert_eq!(labels.get("c").map(String::as_str), Some("3"));
    assert!(!labels.contains_key("b"), "{labels:?}");

    // Status codes and the request log as the wire saw them.
    let body = json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "cfg" }, "data": { "elasticsearch.yml": "x: 1" } }).to_string();
    let path = "/api/v1/namespaces/tenant-a/configmaps/cfg";
    let apply_ct = Some("application/apply-patch+yaml");
    assert_eq!(
        raw(
            &s,
            "PATCH",
            &format!("{path}?fieldManager=esaas"),
            apply_ct,
            &body
        )
        .await
        .0,
        201
    );
    assert_eq!(
        raw(
            &s,
            "PATCH",
            &format!("{path}?fieldManager=esaas"),
            apply_ct,
            &body
        )
        .await
        .0,
        200
    );
    let (code, status) = raw(&s, "PATCH", path, apply_ct, &body).await;
    assert_eq!(
        (code, status["reason"].as_str()),
        (422, Some("Invalid")),
        "{status}"
    );
    let yaml = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cfg\ndata:\n  k: v\n";
    let (code, cm) = raw(
        &s,
        "PATCH",
        &format!("{path}?fieldManager=kubectl"),
        apply_ct,
        yaml,
    )
    .await;
    assert_eq!(code, 200, "{cm}");
    assert_eq!(cm["data"]["k"], "v");
    let (code, status) = raw(&s, "PATCH", path, Some("text/plain"), "{}").await;
    assert_eq!(
        (code, status["reason"].as_str()),
        (415, Some("UnsupportedMediaType"))
    );
    let requests = s.requests();
    assert!(
        requests.contains(&(
            "PATCH".into(),
            "/api/v1/namespaces/tenant-a/secrets/creds".into(),
            Some("application/apply-patch+yaml".into()),
            Some("esaas".into()),
        )),
        "{requests:?}"
    );
}

#[tokio::test]
async fn another_manager_conflicts_unless_forced() {
    let s = KubeStandin::start(Duration::ZERO).await;
    let client = s.client();
    namespace(&client, "t").await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "t");
    let cm = |v: &str| -> ConfigMap {
        typed(
            json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "c" }, "data": { "k": v } }),
        )
    };
    cms.patch("c", &ssa(), &Patch::Apply(cm("one")))
        .await
        .expect("apply");
    // The same value from another manager is shared ownership, not a conflict.
    cms.patch("c", &PatchParams::apply("other"), &Patch::Apply(cm("one")))
        .await
        .expect("same value");
    let err = cms
        .patch("c", &PatchParams::apply("other"), &Patch::Apply(cm("two")))
        .await
        .expect_err("conflict");
    let st = api_status(err);
    assert_eq!((st.code, st.reason.as_str()), (409, "Conflict"));
    assert_eq!(
        st.message,
        "Apply failed with 1 conflict: conflict with \"esaas\": .data.k"
    );
    let forced = cms
        .patch(
            "c",
            &PatchParams::apply("other").force(),
            &Patch::Apply(cm("two")),
        )
        .await
        .expect("forced");
    assert_eq!(forced.data.unwrap()["k"], "two");
    // A merge patch takes the field over silently (operation Update).
    let patched = cms
        .patch(
            "c",
            &PatchParams {
                field_manager: Some("hand".into()),
                ..Default::default()
            },
            &Patch::Merge(json!({ "data": { "k": "three" } })),
        )
        .await
        .expect("merge patch");
    let mf = patched.metadata.managed_fields.unwrap();
    assert!(
        mf.iter()
            .any(|e| e.manager.as_deref() == Some("hand")
                && e.operation.as_deref() == Some("Update"))
    );
}
