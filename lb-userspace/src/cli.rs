//! The `drlb` command line.

use std::{io::IsTerminal as _, path::PathBuf};

use anyhow::{Result, bail};
use clap::{Parser, Subcommand};

use crate::{
    control::{self, Request, Response},
    daemon::{self, RunOptions},
};

/// Where the daemon keeps its control socket unless told otherwise.
pub const DEFAULT_STATE_DIR: &str = "/run/drlb";

#[derive(Parser)]
#[command(
    name = "drlb",
    version,
    about = "An XDP direct-routing (LVS-DR) layer-4 load balancer"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the director in the foreground: load and attach the XDP program, serve until
    /// SIGINT/SIGTERM, then detach.
    Run {
        /// The configuration file (TOML).
        #[arg(long, short)]
        config: PathBuf,
        /// Directory of the control socket; give each director on a host its own.
        #[arg(long, default_value = DEFAULT_STATE_DIR)]
        state_dir: PathBuf,
    },
    /// Show the running daemon's counters.
    Stats {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[arg(long, default_value = DEFAULT_STATE_DIR)]
        state_dir: PathBuf,
    },
}

pub fn main() -> Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match cli.command {
            Command::Run { config, state_dir } => {
                daemon::run(RunOptions { config, state_dir }).await
            }
            Command::Stats { json, state_dir } => {
                match control::call(&state_dir, &Request::Stats).await? {
                    Response::Stats(report) => {
                        if json {
                            println!("{}", serde_json::to_string_pretty(&report)?);
                        } else {
                            print!("{}", report.render());
                        }
                        Ok(())
                    }
                    Response::Error(e) => bail!("the daemon answered: {e}"),
                }
            }
        }
    })
}
