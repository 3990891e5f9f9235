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

#[tokio::test]
async fn a_stuck_call_meets_its_deadline_and_calls_beyond_the_limit_are_shed_while_health_answers()
{
    let app = spawn_app_with(|c| {
        c.request_timeout_ms = 700;
        c.max_concurrent_requests = 1;
    })
    .await;
    let a = app.tenant("alpha").await;
    let list = |key: String| {
        let mut c = app.clusters();
        async move {
            c.list_clusters(authed(
                &key,
                pb::ListClustersRequest {
                    parent: "tenants/alpha".into(),
                    ..Default::default()
                },
            ))
            .await
        }
    };
    // Hold the key table: authenticating a tenant key waits on the lock,
    // so the next call is stuck in the server.
    let pool = app.db.pool().await;
    let mut lock = pool.begin().await.expect("begin");
    sqlx::query("LOCK TABLE api_keys IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .expect("lock");
    let stuck = tokio::spawn(list(a.viewer.clone()));
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;

    // The one slot is taken: the next call is shed at once, not queued.
    let started = std::time::Instant::now();
    let shed = list(a.viewer.clone()).await.expect_err("shed");
    assert!(started.elapsed() < std::time::Duration::from_millis(500));
    assert_eq!(shed.code(), Code::Unavailable, "{shed:?}");
    assert_eq!(reason(&shed), "OVERLOADED");
    assert!(shed.get_details_retry_info().is_some(), "RetryInfo");
    // Health checks are never shed.
    let mut health = tonic_health::pb::health_client::HealthClient::new(app.channel());
    let serving = health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .expect("health answers under load")
        .into_inner();
    assert_eq!(
        serving.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    // The stuck call ends at the deadline with a clear status.
    let late = stuck.await.expect("task").expect_err("past the deadline");
    assert_eq!(late.code(), Code::DeadlineExceeded, "{late:?}");
    assert_eq!(reason(&late), "DEADLINE_EXCEEDED");
    assert!(late.message().contains("700 ms"), "{}", late.message());

    // Once the load is gone, calls are admitted again.
    lock.rollback().await.expect("rollback");
    list(a.viewer.clone()).await.expect("admitted again");
}
