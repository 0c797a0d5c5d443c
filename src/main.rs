use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    kca::cli::run(kca::cli::Cli::parse()).await
}
