//! Per-tenant rate limits through the API.

use esaas_proto::v1 as pb;
use esaas_tests::*;
use tonic::Code;
use tonic_types::StatusExt;

#[tokio::test]
async fn a_tenant_over_its_rate_is_told_when_to_retry_and_others_are_unaffected() {
    let app = spawn_app_with(|c| {
        c.rate_limit_per_second = 2.0;
        c.rate_limit_burst = 5.0;
    })
    .await;
    let a = app.tenant("alpha").await;
    let b = app.tenant("beta").await;
    let list = |key: String, parent: &str| {
        let mut c = app.clusters();
        let parent = parent.to_string();
        async move {
            c.list_clusters(authed(
                &key,
                pb::ListClustersRequest {
                    parent,
                    ..Default::default()
                },
            ))
            .await
        }
    };
    let mut limited = None;
    let mut ok = 0;
    for _ in 0..12 {
        match list(a.viewer.clone(), "tenants/alpha").await {
            Ok(_) => ok += 1,
            Err(status) => {
                limited = Some(status);
                break;
            }
        }
    }
    let status = limited.expect("alpha was limited");
    assert!(ok >= 5, "the burst is admitted: {ok}");
    assert_eq!(status.code(), Code::ResourceExhausted);
    let retry = status.get_details_retry_info().expect("RetryInfo");
    let delay = retry.retry_delay.expect("a delay");
    assert!(
        delay.as_millis() > 0 && delay.as_millis() <= 500,
        "{delay:?}"
    );
    assert_eq!(reason(&status), "RATE_LIMITED");

    // Another tenant is not affected.
    for _ in 0..3 {
        list(b.viewer.clone(), "tenants/beta")
            .await
            .expect("beta is not limited");
    }
    // And alpha is admitted again after the delay.
    tokio::time::sleep(delay).await;
    list(a.viewer.clone(), "tenants/alpha")
        .await
        .expect("admitted after the delay");
}
