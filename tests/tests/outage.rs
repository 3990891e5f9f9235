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

/// PostgreSQL restarts (every connection dropped, the port closed for 8 s,
/// longer than the pool's 5 s wait for a connection)
/// while tenants create clusters and a worker runs them: calls during the
/// outage are UNAVAILABLE with RetryInfo, never another code; the first call
/// after it succeeds within 5 s; every acknowledged create reaches READY; and
/// no operation spends an attempt on the outage.
#[tokio::test]
async fn a_database_restart_under_create_load_loses_nothing() {
    use esaas_proto::v1 as pb;
    use esaas_proto::v1::cluster_service_client::ClusterServiceClient;
    use esaas_tests::pgproxy::PgProxy;
    use tonic_types::StatusExt;

    let db = TestDb::new().await;
    let proxy = PgProxy::start(&db.url).await;
    let toml = "claim_interval_ms = 100\nreap_interval_ms = 200\nretry_backoff_base_seconds = 0\n\
                [default_quota]\nmax_clusters = 200\nmax_nodes = 1000\nmax_storage_gib = 1000000\n";
    let server = ServerProcess::start_with_env(
        &db,
        free_port(),
        toml,
        &[("DATABASE_URL", proxy.url(&db.url))],
    )
    .await;
    let ch = channel(server.addr).await;
    create_tenant_on(ch.clone(), "search").await;
    let key = worker_key_on(ch.clone()).await;
    let sim_config = esaas_tests::sim::SimConfig {
        step_delay: Duration::from_millis(100),
        ..Default::default()
    };
    let _sim = esaas_tests::sim::Sim::connect(&db.url, sim_config)
        .await
        .expect("sim");
    let worker = WorkerProcess::spawn(
        &format!("http://{}", server.addr),
        &key,
        "w1",
        &db.url,
        sim_config,
        Duration::from_millis(50),
        Duration::from_secs(60),
    );

    // Creates, one every 100 ms, each retried with its request id until it
    // is acknowledged, for 16 s; the outage is from 4 s to 12 s.
    #[derive(Default)]
    struct Seen {
        acknowledged: Vec<String>,
        unavailable: usize,
        other: Vec<String>,
        /// When each call was answered OK, since the start.
        ok_at: Vec<Duration>,
    }
    let start = tokio::time::Instant::now();
    let load = {
        let ch = ch.clone();
        tokio::spawn(async move {
            let mut seen = Seen::default();
            let mut client = ClusterServiceClient::new(ch);
            let mut n = 0;
            while start.elapsed() < Duration::from_secs(16) {
                n += 1;
                let mut req = create_request("search", &format!("c{n}"), 1);
                req.request_id = uuid::Uuid::new_v4().to_string();
                loop {
                    match client.create_cluster(authed(ADMIN_KEY, req.clone())).await {
                        Ok(r) => {
                            let c = r.into_inner().cluster.expect("cluster");
                            seen.acknowledged.push(c.name);
                            seen.ok_at.push(start.elapsed());
                            break;
                        }
                        Err(s) if s.code() == tonic::Code::Unavailable => {
                            let delay = s
                                .get_details_retry_info()
                                .and_then(|r| r.retry_delay)
                                .expect("UNAVAILABLE carries RetryInfo with a delay");
                            seen.unavailable += 1;
                            tokio::time::sleep(delay.min(Duration::from_millis(200))).await;
                        }
                        Err(s) => {
                            seen.other.push(format!("{:?}: {}", s.code(), s.message()));
                            break;
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            seen
        })
    };
    tokio::time::sleep_until(start + Duration::from_secs(4)).await;
    proxy.restart_begins().await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    proxy.restart_ends().await;
    let up_at = start.elapsed();
    let seen = load.await.expect("load");

    assert!(
        seen.other.is_empty(),
        "only UNAVAILABLE during the outage: {:?}",
        seen.other
    );
    assert!(seen.unavailable > 0, "the outage was seen");
    let first_ok_after = seen
        .ok_at
        .iter()
        .find(|t| **t >= up_at)
        .map(|t| *t - up_at)
        .expect("calls succeeded after the outage");
    assert!(
        first_ok_after < Duration::from_secs(5),
        "first OK {first_ok_after:?} after the database came back"
    );
    assert!(
        seen.acknowledged.len() >= 40,
        "{} creates",
        seen.acknowledged.len()
    );
    eprintln!(
        "{} creates acknowledged, {} UNAVAILABLE answers, first OK {first_ok_after:?} after the database came back",
        seen.acknowledged.len(),
        seen.unavailable
    );

    // Every acknowledged create is kept and runs to READY.
    for name in &seen.acknowledged {
        wait_cluster_at(ch.clone(), name, Duration::from_secs(120), |c| {
            state(c) == pb::ClusterState::Ready as i32
        })
        .await;
    }
    // No attempt was spent on the outage: each create ran once.
    let pool = db.pool().await;
    let attempts: Vec<(String, i32)> = sqlx::query_as(
        "SELECT c.cluster_id, o.attempts FROM operations o JOIN clusters c ON c.uid = o.cluster_uid \
         WHERE o.kind = 'CREATE' ORDER BY c.cluster_id",
    )
    .fetch_all(&pool)
    .await
    .expect("attempts");
    assert_eq!(attempts.len(), seen.acknowledged.len());
    let repeated: Vec<_> = attempts.iter().filter(|(_, n)| *n != 1).collect();
    assert!(
        repeated.is_empty(),
        "attempts spent on the outage: {repeated:?}"
    );
    worker.kill().await;
    server.kill().await;
}
