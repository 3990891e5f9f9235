use super::*;

#[tokio::test]
async fn list_with_label_selectors() {
    let s = KubeStandin::start(Duration::ZERO).await;
    let client = s.client();
    namespace(&client, "t").await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "t");
    for (name, labels) in [
        ("a", json!({ "cluster": "c1", "role": "creds" })),
        ("b", json!({ "cluster": "c1", "role": "tls" })),
        ("c", json!({ "cluster": "c2" })),
    ] {
        secrets
            .patch(name, &ssa(), &Patch::Apply(secret(name, labels)))
            .await
            .expect("apply");
    }
    let names = async |sel: &str| -> Vec<String> {
        let lp = if sel.is_empty() {
            ListParams::default()
        } else {
            ListParams::default().labels(sel)
        };
        let list = secrets.list(&lp).await.expect("list");
        assert!(list.metadata.resource_version.is_some());
        list.items
            .into_iter()
            .map(|s| s.metadata.name.unwrap())
            .collect()
    };
    assert_eq!(names("").await, ["a", "b", "c"]);
    assert_eq!(names("cluster=c1").await, ["a", "b"]);
    assert_eq!(names("cluster=c1,role=tls").await, ["b"]);
    assert_eq!(names("cluster!=c1").await, ["c"]);
    assert_eq!(names("role").await, ["a", "b"]);
    assert_eq!(names("!role").await, ["c"]);
    assert_eq!(names("role in (creds,x)").await, ["a"]);
    assert_eq!(names("role notin (creds)").await, ["b", "c"]);
    let one = secrets
        .list(&ListParams::default().fields("metadata.name=b"))
        .await
        .expect("field selector");
    assert_eq!(one.items.len(), 1);
    let page = secrets
        .list(&ListParams::default().limit(2))
        .await
        .expect("page");
    assert_eq!(page.items.len(), 2);
    let rest = secrets
        .list(
            &ListParams::default()
                .limit(2)
                .continue_token(page.metadata.continue_.as_deref().unwrap()),
        )
        .await
        .expect("next page");
    assert_eq!(rest.items.len(), 1);
    // Across namespaces.
    let all: Api<Secret> = Api::all(client.clone());
    assert_eq!(
        all.list(&ListParams::default().labels("cluster=c2"))
            .await
            .unwrap()
            .items
            .len(),
        1
    );
    let meta = secrets
        .list_metadata(&ListParams::default())
        .await
        .expect("metadata list");
    assert_eq!(meta.items.len(), 3);
}

#[tokio::test]
async fn watch_streams_changes() {
    let s = KubeStandin::start(Duration::ZERO).await;
    let client = s.client();
    namespace(&client, "t").await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "t");
    let from = secrets
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut stream = secrets
        .watch(&WatchParams::default().labels("w=1").timeout(10), &from)
        .await
        .expect("watch")
        .boxed();
    secrets
        .patch("x", &ssa(), &Patch::Apply(secret("x", json!({ "w": "1" }))))
        .await
        .unwrap();
    secrets
        .patch("y", &ssa(), &Patch::Apply(secret("y", json!({ "w": "2" }))))
        .await
        .unwrap();
    secrets.delete("x", &DeleteParams::default()).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        match tokio::time::timeout(Duration::from_secs(5), stream.try_next()).await {
            Ok(Ok(Some(WatchEvent::Added(o)))) => {
                seen.push(format!("ADDED {}", o.metadata.name.unwrap()))
            }
            Ok(Ok(Some(WatchEvent::Deleted(o)))) => {
                seen.push(format!("DELETED {}", o.metadata.name.unwrap()))
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(seen, ["ADDED x", "DELETED x"]);
}

#[tokio::test]
async fn kubeconfig_reaches_the_standin() {
    let s = KubeStandin::start(Duration::ZERO).await;
    let dir = std::env::temp_dir().join(format!("kube-standin-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("kubeconfig");
    s.write_kubeconfig(&path).unwrap();
    let kc = kube::config::Kubeconfig::read_from(&path).expect("read kubeconfig");
    assert_eq!(kc.current_context.as_deref(), Some("esaas-standin"));
    let config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .expect("config");
    assert_eq!(config.cluster_url.to_string(), format!("{}/", s.url()));
    let client = kube::Client::try_from(config).unwrap();
    let all = Api::<Namespace>::all(client)
        .list(&ListParams::default())
        .await
        .unwrap();
    assert!(
        all.items
            .iter()
            .any(|n| n.metadata.name.as_deref() == Some("default"))
    );
    std::fs::remove_dir_all(&dir).ok();
}
