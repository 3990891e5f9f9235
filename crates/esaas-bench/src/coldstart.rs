//! Scenario 5, cold start: from spawning `esaas serve --migrate` to its
//! health service answering SERVING, on an empty database (every migration
//! applied during the start) and on one already migrated. Baseline: the
//! empty tonic server (`esaas-bench serve-empty`), the floor of starting a
//! process that serves gRPC.

use std::time::Duration;

use esaas_tests::TestDb;
use serde::Serialize;

use crate::empty::EmptyServer;
use crate::plan::Plan;
use crate::platform::{Env, ServeOptions, Server};
use crate::proc;
use crate::report::{Section, Table};
use crate::stats::{Runs, fmt_mib, fmt_ms, fmt_ratio, ratio};

#[derive(Debug, Clone, Serialize)]
struct Kind {
    name: &'static str,
    /// Spawn → SERVING, ms, per run.
    ms: Runs,
    /// RSS when it first served, KiB (median of runs).
    rss_kib: f64,
}

fn kind(name: &'static str, ms: Vec<f64>, rss: Vec<f64>) -> Kind {
    Kind {
        name,
        ms: Runs::of(ms),
        rss_kib: Runs::of(rss).median,
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Runs the scenario.
pub async fn run(env: &Env, plan: &Plan) -> anyhow::Result<Section> {
    let migrated = TestDb::try_create(true).await?;
    let responses = env.file("coldstart-responses");
    std::fs::create_dir_all(&responses)?;
    let opts = ServeOptions {
        extra_toml: String::new(),
        migrate: true,
    };
    let (mut fresh_ms, mut fresh_rss) = (Vec::new(), Vec::new());
    let (mut warm_ms, mut warm_rss) = (Vec::new(), Vec::new());
    let (mut empty_ms, mut empty_rss) = (Vec::new(), Vec::new());
    for run in 0..plan.coldstart_runs {
        // Interleaved, one of each per run.
        let empty_db = TestDb::try_create(false).await?;
        let s = Server::start(env, &empty_db, &format!("coldstart-fresh-{run}"), &opts).await?;
        fresh_ms.push(ms(s.started_in));
        fresh_rss.push(proc::status(s.child.pid())?.rss_kib as f64);
        s.stop().await?;
        drop(empty_db);

        let s = Server::start(env, &migrated, &format!("coldstart-migrated-{run}"), &opts).await?;
        warm_ms.push(ms(s.started_in));
        warm_rss.push(proc::status(s.child.pid())?.rss_kib as f64);
        s.stop().await?;

        let e = EmptyServer::start(env, &responses, &format!("coldstart-empty-{run}")).await?;
        empty_ms.push(ms(e.started_in));
        empty_rss.push(proc::status(e.child.pid())?.rss_kib as f64);
        e.stop().await?;
    }
    let kinds = [
        kind("esaas serve --migrate, empty database", fresh_ms, fresh_rss),
        kind(
            "esaas serve --migrate, migrated database",
            warm_ms,
            warm_rss,
        ),
        kind("empty tonic server (baseline)", empty_ms, empty_rss),
    ];
    let base = kinds[2].ms.median;
    let mut t = Table::new(
        "Spawn → health SERVING (ms; median and p99 of runs)",
        &[
            "process",
            "median",
            "p99",
            "/ empty server",
            "RSS at start (MiB)",
        ],
    );
    for k in &kinds {
        t.row(vec![
            k.name.into(),
            fmt_ms(k.ms.median),
            fmt_ms(k.ms.p99),
            fmt_ratio(ratio(k.ms.median, base)),
            fmt_mib(k.rss_kib),
        ]);
    }
    Ok(Section {
        key: "coldstart",
        title: "5. Cold start".into(),
        notes: vec![
            format!(
                "Time from spawning the process to the first `grpc.health.v1` Check that answers SERVING (polled every 2 ms over fresh connections), {} run(s) of each, interleaved. The empty database is created beforehand (not timed); `--migrate` then applies every migration during the start.",
                plan.coldstart_runs
            ),
            "What `esaas serve` does before it serves: load configuration, connect its database pool, migrate, start the change feed's LISTEN connection, bind.".into(),
        ],
        tables: vec![t],
        checks: Vec::new(),
        data: serde_json::json!({ "kinds": kinds }),
    })
}
