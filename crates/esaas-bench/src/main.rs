//! `esaas-bench`: measures esaas beside its baselines and writes the figures
//! to stdout, a JSON file and the generated part of BENCHMARKS.md.
//!
//! Scenarios (`--only` picks some): `unary` (GetCluster, ListClusters,
//! CreateCluster), `overhead` (CreateCluster → READY with instant
//! stand-ins), `watch` (WatchCluster fan-out), `inflight` (1,000 operations
//! in one worker), `coldstart` and `observe` (10,000 clusters observed by one
//! worker). Servers under measurement are child
//! processes of the binaries built next to this one; the load comes from
//! this process. Needs `ESAAS_TEST_DATABASE_URL` (a role that may create
//! databases: `scripts/ensure-postgres.sh` prints one). `scripts/bench.sh`
//! (`make bench`, `make bench-tiny`) does it all.

mod coldstart;
mod dbbase;
mod empty;
mod inflight;
mod load;
mod observe;
mod overhead;
mod plan;
mod platform;
mod proc;
mod proxy;
mod report;
mod stats;
mod unary;
mod watch;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use crate::plan::{Plan, SCENARIOS, Size};
use crate::platform::Env;

/// Benchmarks of esaas, each figure beside its baseline.
#[derive(Parser)]
#[command(about, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the empty ClusterService (the gRPC baseline) until SIGTERM.
    #[command(hide = true)]
    ServeEmpty {
        /// Address to listen on.
        #[arg(long)]
        listen: SocketAddr,
        /// Directory of captured answers to replay.
        #[arg(long)]
        responses: PathBuf,
    },
}

#[derive(Args)]
struct RunArgs {
    /// `full` measures what the issue asks for; `tiny` is CI's smoke run.
    #[arg(long, value_enum, default_value = "full")]
    size: Size,
    /// Where the JSON goes.
    #[arg(long, default_value = "bench-results.json")]
    out: PathBuf,
    /// The Markdown report; only its generated part is rewritten.
    #[arg(long, default_value = "BENCHMARKS.md")]
    markdown: PathBuf,
    /// Run only these scenarios (comma-separated).
    #[arg(long, value_delimiter = ',', value_parser = SCENARIOS)]
    only: Vec<String>,
    /// Runs per point, instead of the size's.
    #[arg(long)]
    runs: Option<usize>,
    /// Measured window of each run in milliseconds, instead of the size's.
    #[arg(long)]
    measure_ms: Option<u64>,
    /// Numbers of watch streams (comma-separated), instead of the size's.
    #[arg(long, value_delimiter = ',')]
    watch_streams: Vec<usize>,
    /// Operations in flight in one worker, instead of the size's.
    #[arg(long)]
    inflight_ops: Option<usize>,
    /// The esaas binary (default: next to this one).
    #[arg(long, env = "ESAAS_BIN")]
    esaas_bin: Option<PathBuf>,
    /// The esaas-test-worker binary (default: next to this one).
    #[arg(long, env = "ESAAS_TEST_WORKER_BIN")]
    test_worker_bin: Option<PathBuf>,
    /// Configuration files, logs and captured answers (default: a new
    /// directory under the system's temporary directory, removed after a
    /// run without errors).
    #[arg(long)]
    work_dir: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    match cli.command {
        Some(Command::ServeEmpty { listen, responses }) => empty::serve(listen, &responses).await,
        None => run(cli.run).await,
    }
}

async fn postgres_version() -> String {
    let Ok(url) = esaas_tests::try_admin_database_url() else {
        return "unknown".into();
    };
    let Ok(pool) = sqlx::PgPool::connect(&url).await else {
        return "unknown".into();
    };
    let v: Result<String, _> = sqlx::query_scalar("SHOW server_version")
        .fetch_one(&pool)
        .await;
    pool.close().await;
    v.unwrap_or_else(|_| "unknown".into())
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let mut plan = Plan::of(args.size);
    if let Some(r) = args.runs {
        plan.runs = r.max(1);
    }
    if let Some(ms) = args.measure_ms {
        plan.measure = Duration::from_millis(ms.max(10));
    }
    if !args.watch_streams.is_empty() {
        plan.watch_streams = args.watch_streams.clone();
    }
    if let Some(n) = args.inflight_ops {
        plan.inflight_ops = n.max(1);
    }
    // Fail before anything starts if the database is not there.
    esaas_tests::try_admin_database_url()?;

    let (work_dir, temporary) = match &args.work_dir {
        Some(d) => (d.clone(), false),
        None => (
            std::env::temp_dir().join(format!("esaas-bench-{}", std::process::id())),
            true,
        ),
    };
    std::fs::create_dir_all(&work_dir)
        .with_context(|| format!("creating {}", work_dir.display()))?;
    let env = Env {
        esaas: proc::binary(args.esaas_bin.as_deref(), "esaas")?,
        test_worker: proc::binary(args.test_worker_bin.as_deref(), "esaas-test-worker")?,
        bench: std::env::current_exe().context("locating esaas-bench")?,
        work_dir: work_dir.clone(),
    };
    let size = match args.size {
        Size::Tiny => "tiny",
        Size::Full => "full",
    };
    let mut meta = report::Meta::gather(size, postgres_version().await);
    let started = std::time::Instant::now();
    tracing::info!(?plan, work_dir = %work_dir.display(), "benchmark starting");

    let mut sections = Vec::new();
    let mut failures = Vec::new();
    for scenario in SCENARIOS {
        if !args.only.is_empty() && !args.only.iter().any(|o| o == scenario) {
            continue;
        }
        let t = std::time::Instant::now();
        tracing::info!(scenario, "scenario starting");
        let result = match scenario {
            "unary" => unary::run(&env, &plan).await,
            "overhead" => overhead::run(&env, &plan).await,
            "watch" => watch::run(&env, &plan).await,
            "inflight" => inflight::run(&env, &plan).await,
            "observe" => observe::run(&env, &plan).await,
            _ => coldstart::run(&env, &plan).await,
        };
        match result {
            Ok(section) => {
                println!("{}", report::text(&section));
                tracing::info!(
                    scenario,
                    seconds = t.elapsed().as_secs_f64(),
                    "scenario done"
                );
                sections.push(section);
            }
            Err(e) => {
                tracing::error!(scenario, error = %format!("{e:#}"), "scenario failed");
                failures.push(format!("{scenario}: {e:#}"));
            }
        }
    }
    meta.seconds = started.elapsed().as_secs_f64();
    report::write_json(&args.out, &meta, &sections)?;
    report::write_markdown(&args.markdown, &meta, &sections)?;
    println!(
        "\nwrote {} and {} ({:.0} s)",
        args.out.display(),
        args.markdown.display(),
        meta.seconds
    );
    if !failures.is_empty() {
        anyhow::bail!(
            "{} scenario(s) failed (logs in {}):\n{}",
            failures.len(),
            work_dir.display(),
            failures.join("\n")
        );
    }
    if temporary {
        let _ = std::fs::remove_dir_all(&work_dir);
    }
    Ok(())
}
