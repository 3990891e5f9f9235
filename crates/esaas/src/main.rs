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
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    esaas_runtime::init_logging();
    let mut config = esaas_runtime::Config::load(cli.config.as_deref())?;
    match cli.command {
        Command::Serve { migrate } => {
            config.migrate_on_start |= migrate;
            esaas_runtime::serve_until_signal(&config).await
        }
        Command::Migrate => esaas_runtime::migrate(&config).await,
    }
}
