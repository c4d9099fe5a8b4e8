//! The `drlb` command line.

use std::{io::IsTerminal as _, net::Ipv4Addr, path::PathBuf};

use anyhow::{Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use macaddr::MacAddr6;

use crate::{
    config::{BackendConfig, Scheduler, ServiceConfig, ServiceId},
    control::{self, Request, Response},
    daemon::{self, RunOptions},
    director::Change,
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
    /// SIGINT/SIGTERM, then detach. SIGHUP re-reads the config and applies the difference.
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
    /// Add or remove services of the running daemon (not written to the config file).
    #[command(subcommand)]
    Service(ServiceCommand),
    /// Add, remove or reweight backends of the running daemon (not written to the config file).
    #[command(subcommand)]
    Backend(BackendCommand),
}

#[derive(Args)]
struct Target {
    /// The service, as PROTOCOL/VIP:PORT (e.g. tcp/198.18.0.100:8080).
    #[arg(long, short)]
    service: ServiceId,
    #[arg(long, default_value = DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
}

#[derive(Clone, Copy, ValueEnum)]
enum SchedulerArg {
    Maglev,
    SourceHash,
}

#[derive(Subcommand)]
enum ServiceCommand {
    /// Add a service (without backends; add them with `drlb backend add`).
    Add {
        #[command(flatten)]
        target: Target,
        #[arg(long, value_enum, default_value = "maglev")]
        scheduler: SchedulerArg,
        /// Maglev table size (a prime).
        #[arg(long, default_value_t = lb_common::DEFAULT_TABLE_SIZE)]
        table_size: u32,
    },
    /// Remove a service and its backends.
    Remove {
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Subcommand)]
enum BackendCommand {
    /// Add a backend to a service.
    Add {
        #[command(flatten)]
        target: Target,
        #[arg(long, short)]
        address: Ipv4Addr,
        #[arg(long, short, default_value_t = 1)]
        weight: u32,
        /// The backend's MAC, instead of the neighbour table's.
        #[arg(long)]
        mac: Option<MacAddr6>,
        /// The director's interface that reaches it (default: the one whose subnet holds it).
        #[arg(long)]
        interface: Option<String>,
    },
    /// Remove a backend: its flows move to the others.
    Remove {
        #[command(flatten)]
        target: Target,
        #[arg(long, short)]
        address: Ipv4Addr,
    },
    /// Change a backend's weight; 0 drains it (no new flows, established ones continue).
    SetWeight {
        #[command(flatten)]
        target: Target,
        #[arg(long, short)]
        address: Ipv4Addr,
        #[arg(long, short)]
        weight: u32,
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
                    other => unexpected(other),
                }
            }
            Command::Service(command) => {
                let (state_dir, change) = service_change(command);
                send_change(&state_dir, change).await
            }
            Command::Backend(command) => {
                let (state_dir, change) = backend_change(command);
                send_change(&state_dir, change).await
            }
        }
    })
}

fn service_change(command: ServiceCommand) -> (PathBuf, Change) {
    match command {
        ServiceCommand::Add {
            target,
            scheduler,
            table_size,
        } => {
            let ServiceId {
                protocol,
                vip,
                port,
            } = target.service;
            let service = ServiceConfig {
                vip,
                port,
                protocol,
                scheduler: match scheduler {
                    SchedulerArg::Maglev => Scheduler::Maglev,
                    SchedulerArg::SourceHash => Scheduler::SourceHash,
                },
                table_size,
                health_check: None,
                backends: Vec::new(),
            };
            (target.state_dir, Change::ServiceAdd { service })
        }
        ServiceCommand::Remove { target } => (
            target.state_dir,
            Change::ServiceRemove {
                service: target.service,
            },
        ),
    }
}

fn backend_change(command: BackendCommand) -> (PathBuf, Change) {
    match command {
        BackendCommand::Add {
            target,
            address,
            weight,
            mac,
            interface,
        } => {
            let backend = BackendConfig {
                address,
                weight,
                interface,
                mac,
            };
            (
                target.state_dir,
                Change::BackendAdd {
                    service: target.service,
                    backend,
                },
            )
        }
        BackendCommand::Remove { target, address } => (
            target.state_dir,
            Change::BackendRemove {
                service: target.service,
                address,
            },
        ),
        BackendCommand::SetWeight {
            target,
            address,
            weight,
        } => (
            target.state_dir,
            Change::BackendSetWeight {
                service: target.service,
                address,
                weight,
            },
        ),
    }
}

async fn send_change(state_dir: &std::path::Path, change: Change) -> Result<()> {
    match control::call(state_dir, &Request::Change { change }).await? {
        Response::Applied(effects) => {
            for effect in effects {
                println!("{effect}");
            }
            Ok(())
        }
        other => unexpected(other),
    }
}

fn unexpected(response: Response) -> Result<()> {
    match response {
        Response::Error(e) => bail!("{e}"),
        other => bail!("the daemon gave an unexpected answer: {other:?}"),
    }
}
