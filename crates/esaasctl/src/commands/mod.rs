//! One function per command: build the request, call the client, print the answer.

mod admin;
mod clusters;
mod operations;
mod snapshots;

use anyhow::Context;
use esaas_client::Client;

use crate::cli::{Cli, Command};
use crate::exit::Failure;
use crate::output::Format;

/// What every command needs.
pub struct Ctx {
    /// The connection.
    pub client: Client,
    /// How to print.
    pub format: Format,
    /// `--tenant`.
    pub tenant: Option<String>,
}

/// Runs the command line.
pub async fn run(args: Cli) -> Result<(), Failure> {
    if let Command::Completions { shell } = args.command {
        let mut cmd = <Cli as clap::CommandFactory>::command();
        clap_complete::generate(shell, &mut cmd, "esaasctl", &mut std::io::stdout());
        return Ok(());
    }
    let mut builder = Client::builder(&args.addr);
    if let Some(key) = &args.key {
        builder = builder.key(key);
    }
    if let Some(path) = &args.ca_cert {
        let pem = std::fs::read_to_string(path)
            .with_context(|| format!("reading the CA certificate {}", path.display()))?;
        builder = builder.ca_certificate_pem(pem);
    }
    // Lazily: the first call retries while the server is unreachable, then says so.
    let client = builder.connect_lazy()?;
    let ctx = Ctx {
        client,
        format: args.output,
        tenant: args.tenant,
    };
    match args.command {
        Command::Clusters(c) => clusters::run(&ctx, c).await,
        Command::Snapshots(c) => snapshots::run(&ctx, c).await,
        Command::Operations(c) => operations::run(&ctx, c).await,
        Command::Tenants(c) => admin::tenants(&ctx, c).await,
        Command::Keys(c) => admin::keys(&ctx, c).await,
        Command::Catalog => admin::catalog(&ctx).await,
        Command::Workers => admin::workers(&ctx).await,
        Command::Completions { .. } => Ok(()),
    }
}
