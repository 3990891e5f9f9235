//! `esaas`: the one binary. Parses arguments and calls into `esaas-runtime`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Elasticsearch clusters as a service.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Configuration file, laid over the built-in defaults.
    #[arg(long, global = true, env = "ESAAS_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the gRPC API.
    Serve {
        /// Apply pending migrations first.
        #[arg(long)]
        migrate: bool,
    },
    /// Apply pending database migrations and exit.
    Migrate,
    /// Check the configuration and print it (secrets redacted).
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Create the configured EKS cluster in an EKS emulator if it is missing (local setup).
    EksSetup,
    /// Run a worker that connects to a control plane (no database access).
    Worker {
        /// URL of the control plane, e.g. https://esaas:50051 (default:
        /// worker.control_plane_url, or ESAAS_CONTROL_PLANE_URL).
        #[arg(long)]
        control_plane: Option<String>,
        /// Stable id of this worker (default: host name and process id).
        #[arg(long, env = "ESAAS_WORKER_ID")]
        id: Option<String>,
    },
}

#[derive(Subcommand)]
enum ConfigAction {
    /// Load defaults, the file and the environment, validate, and print the result.
    Check,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut config = esaas_runtime::Config::load(cli.config.as_deref())?;
    if let Command::Config {
        action: ConfigAction::Check,
    } = cli.command
    {
        config.check_files()?;
        print!("{}", config.to_redacted_toml()?);
        return Ok(());
    }
    if let Command::Worker {
        control_plane: Some(url),
        ..
    } = &cli.command
    {
        config.worker.control_plane_url = url.clone();
        config.validate()?;
    }
    let service = match cli.command {
        Command::Worker { .. } => "esaas-worker",
        _ => "esaas-control-plane",
    };
    let telemetry = esaas_runtime::init_telemetry(&config, service)?;
    let result = match cli.command {
        Command::Serve { migrate } => {
            config.migrate_on_start |= migrate;
            esaas_runtime::serve_until_signal(&config).await
        }
        Command::Migrate => esaas_runtime::migrate(&config).await,
        Command::Config { .. } => Ok(()),
        Command::EksSetup => esaas_runtime::eks_setup(&config).await,
        Command::Worker { id, .. } => {
            // The key comes from the environment only: never from argv, where `ps` shows it.
            let key = std::env::var("ESAAS_WORKER_KEY").unwrap_or_default();
            esaas_runtime::run_worker(&config, key, id).await
        }
    };
    // Export the last spans and metrics, whatever the outcome.
    // It blocks until the exporter thread is done, which needs the runtime.
    let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
    result
}
