//! `esaasctl`: the command line of esaas. `main` parses the arguments, runs the
//! command and turns its outcome into an exit code (see [`exit`]).

mod cli;
mod commands;
mod exit;
mod names;
mod output;
mod progress;

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = cli::Cli::parse();
    let outcome = commands::run(args).await;
    exit::report(outcome)
}
