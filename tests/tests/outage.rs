//! A database outage, through real processes: `esaas serve` against a real
//! PostgreSQL whose database stops taking connections, then takes them again.

use std::time::Duration;

use esaas_tests::*;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

async fn status(ch: tonic::transport::Channel, service: &str) -> i32 {
    HealthClient::new(ch)
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .map(|r| r.into_inner().status)
        .unwrap_or(-1)
}

async fn until(
    ch: &tonic::transport::Channel,
    service: &str,
    want: ServingStatus,
    within: Duration,
) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let got = status(ch.clone(), service).await;
        if got == want as i32 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "health of {service:?} is {got}, not {want:?}, after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Readiness (the default health service) follows the database; liveness
/// (`esaas.liveness`, what deploy/'s liveness probe asks) does not, so an
/// outage takes the pod out of the load balancer without restarting it.
#[tokio::test]
async fn an_outage_makes_the_server_unready_but_never_unlive() {
    let db = TestDb::new().await;
    let server = ServerProcess::start(&db).await;
    let ch = channel(server.addr).await;
    until(&ch, "", ServingStatus::Serving, Duration::from_secs(10)).await;
    until(
        &ch,
        "esaas.liveness",
        ServingStatus::Serving,
        Duration::from_secs(1),
    )
    .await;

    // The database stops taking connections, and its sessions end.
    let admin = sqlx::PgPool::connect(&admin_database_url())
        .await
        .expect("admin connection");
    let name = db.name().to_string();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "ALTER DATABASE {name} ALLOW_CONNECTIONS false"
    )))
    .execute(&admin)
    .await
    .expect("refuse connections");
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
        .bind(&name)
        .execute(&admin)
        .await
        .expect("end sessions");
    // The watcher pings every 5 s.
    until(&ch, "", ServingStatus::NotServing, Duration::from_secs(15)).await;
    assert_eq!(
        status(ch.clone(), "esaas.liveness").await,
        ServingStatus::Serving as i32,
        "liveness does not follow the database"
    );

    sqlx::query(sqlx::AssertSqlSafe(format!(
        "ALTER DATABASE {name} ALLOW_CONNECTIONS true"
    )))
    .execute(&admin)
    .await
    .expect("take connections again");
    until(&ch, "", ServingStatus::Serving, Duration::from_secs(15)).await;
    admin.close().await;
    server.kill().await;
}

/// Every session of the server's pool carries `statement_timeout`: a
/// statement that runs longer is cancelled and fails, rather than holding a
/// connection for ever.
#[tokio::test]
async fn pool_sessions_carry_a_statement_timeout() {
    let db = TestDb::new().await;
    let store = esaas_store::Store::connect_with(&db.url, 2, Some(Duration::from_millis(300)))
        .await
        .expect("connect");
    let shown: String = sqlx::query_scalar("SHOW statement_timeout")
        .fetch_one(store.pool())
        .await
        .expect("show");
    assert_eq!(shown, "300ms");
    let slow = sqlx::query("SELECT pg_sleep(2)")
        .execute(store.pool())
        .await
        .expect_err("cancelled");
    assert!(slow.to_string().contains("statement timeout"), "{slow}");
    // The default configuration sets one too.
    let defaults = esaas_runtime::Config::load(None).expect("defaults");
    assert_eq!(defaults.database_statement_timeout_ms, 10_000);
}
