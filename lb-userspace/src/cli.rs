//! The `drlb` command line.

use std::{io::IsTerminal as _, net::IpAddr, path::PathBuf};

use anyhow::{Context as _, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use macaddr::MacAddr6;

use crate::{
    config::{BackendConfig, Scheduler, ServiceConfig, ServiceId},
    daemon::control::{self, Request, Response},
    daemon::{self, RunOptions},
    daemon::{failover, systemd},
    dataplane::{offline, pins::PinDir},
    director::Change,
    doctor, realserver,
    report::list,
    testbed,
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
    /// How log lines are written to stderr: text, or JSON lines for log shippers.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    /// One JSON object per line (timestamp, level, fields, target).
    Json,
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
        /// Start deactivated, as a failover standby: no ARP answers, no forwarding, until
        /// `drlb vip activate` (see docs/keepalived.md).
        #[arg(long)]
        standby: bool,
    },
    /// Show the running daemon's counters.
    Stats {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[arg(long, default_value = DEFAULT_STATE_DIR)]
        state_dir: PathBuf,
    },
    /// Show the running daemon's services and backends as `ipvsadm -Ln` does, column for column.
    ///
    /// Scheduler: mh (Maglev) or sh (source hash); Forward: Route (direct routing). Weight: the
    /// configured one, 0 for a backend that gets no traffic (health check failed, MAC unknown).
    /// ActiveConn and InActConn are always 0: drlb keeps no connection state (its flow table
    /// remembers a 5-tuple's backend until the entry is evicted, with no TCP state or timeout),
    /// so it cannot tell active from inactive connections; read Conns and CPS instead.
    /// Conns: new connections (flows the program scheduled: a new 5-tuple, or a flow scheduled
    /// again because its backend left or its entry was evicted). OutPkts/OutBytes and the Out
    /// rates are 0: in direct routing the replies bypass the director, as with IPVS.
    /// Rates are the mean of the daemon's last 2-second interval (IPVS smooths them; drlb does
    /// not). The header's size is the flow table's capacity.
    #[command(verbatim_doc_comment)]
    List {
        /// Conns, InPkts, OutPkts, InBytes, OutBytes instead of the weights.
        #[arg(long, conflicts_with = "rate")]
        stats: bool,
        /// CPS, InPPS, OutPPS, InBPS, OutBPS (per second, last 2 s) instead of the weights.
        #[arg(long)]
        rate: bool,
        /// Every digit of the counters (no K, M, G suffixes).
        #[arg(long)]
        exact: bool,
        #[arg(long, default_value = DEFAULT_STATE_DIR)]
        state_dir: PathBuf,
    },
    /// Add or remove services of the running daemon (not written to the config file).
    #[command(subcommand)]
    Service(ServiceCommand),
    /// Add, remove or reweight backends of the running daemon (not written to the config file).
    #[command(subcommand)]
    Backend(BackendCommand),
    /// Make this director answer ARP for its VIPs and forward (activate), or stop (deactivate):
    /// for keepalived's notify scripts.
    #[command(subcommand)]
    Vip(VipCommand),
    /// On the director: ask the link who answers ARP for each VIP, and name every backend or
    /// other host that must not (exit status 1 when anything is wrong).
    Doctor {
        #[arg(long, default_value = DEFAULT_STATE_DIR)]
        state_dir: PathBuf,
        /// ARP requests per VIP.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
        count: u32,
        /// How long to wait for answers after the last request, in milliseconds.
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=10_000))]
        wait_ms: u64,
    },
    /// Detach the data plane that `drlb run` leaves forwarding when it stops, and remove its
    /// pinned maps and links (flows and counters are lost). Refused while drlb runs.
    Down {
        #[arg(long, default_value = DEFAULT_STATE_DIR)]
        state_dir: PathBuf,
        /// The pin directory, if not the one recorded in the state directory (or its default).
        #[arg(long)]
        pin_dir: Option<PathBuf>,
    },
    /// Install the director's systemd unit (Type=notify, watchdog, reload on SIGHUP, restart on
    /// failure) at /etc/systemd/system/drlb.service, and a root-owned copy of this binary at
    /// /usr/local/sbin/drlb that it runs. With --print, print the unit and change nothing.
    InstallUnit {
        #[arg(long, default_value = "/etc/drlb/drlb.toml")]
        config: PathBuf,
        #[arg(long, default_value = DEFAULT_STATE_DIR)]
        state_dir: PathBuf,
        /// Print the unit (running this binary) instead of installing anything.
        #[arg(long)]
        print: bool,
    },
    /// On a real server: hold the VIPs on lo and keep ARP quiet about them (LVS-DR).
    #[command(subcommand)]
    Realserver(RealserverCommand),
    /// A throw-away LVS-DR testbed in network namespaces (client, director, real servers), for
    /// testing a service behind drlb in CI.
    #[command(subcommand)]
    Testbed(TestbedCommand),
    /// Print a drlb.toml equivalent to a keepalived or ipvsadm configuration. What cannot be
    /// translated is listed on stderr with its line. Exit status 0: everything translated; 1:
    /// something left out (stdout still holds a valid config of the rest); 2: unreadable input.
    #[command(subcommand)]
    Import(ImportCommand),
}

#[derive(Args)]
struct ImportOptions {
    /// Also translate NAT and TUN services, where every real server listens on the virtual
    /// port; the real servers then need `drlb realserver setup`.
    #[arg(long)]
    convert_to_dr: bool,
    /// [director] interface (default: the first vrrp_instance's interface, else eth0).
    #[arg(long)]
    interface: Option<String>,
}

#[derive(Subcommand)]
enum ImportCommand {
    /// The LVS part of a keepalived.conf (virtual_server, real_server, checkers), with its
    /// includes.
    Keepalived {
        #[command(flatten)]
        options: ImportOptions,
        /// keepalived's config id (its -i): decides `@id` conditional lines.
        #[arg(long)]
        config_id: Option<String>,
        file: PathBuf,
    },
    /// `ipvsadm-save -n` output, from FILE or standard input (`-` or nothing).
    Ipvsadm {
        #[command(flatten)]
        options: ImportOptions,
        file: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum TestbedCommand {
    /// Build the testbed, start `drlb run` on its director and print one JSON object that
    /// describes it (namespaces, addresses, MACs, services).
    Up {
        /// Names the namespaces (drlbtb-NAME-client, -director, -rs1...) and the state
        /// directory /run/drlb-testbed/NAME: a-z, 0-9 and '-', at most 16 characters.
        #[arg(long)]
        name: String,
        /// How many real servers.
        #[arg(long, default_value_t = testbed::plan::DEFAULT_SERVERS)]
        servers: u32,
        /// The director reaches the real servers on a second bridge (its eth1, their eth1 on
        /// 198.18.88.0/24); they answer the client through their eth0, as in the classic
        /// two-armed LVS-DR testbed.
        #[arg(long)]
        two_armed: bool,
        /// IPv6 too: every host gets an address in 2001:2::/64 (2001:2::11, ::12, ... for the
        /// real servers; two-armed, their eth1 2001:2:0:88::11, ...) and the generated config
        /// the same two services on the IPv6 VIP 2001:2::100.
        #[arg(long)]
        ipv6: bool,
        /// The director's config instead of the generated one (TCP port 80 and UDP port 5353 of
        /// 198.18.0.100 over every server); its interface must be eth0 (two-armed: eth0 and
        /// eth1), its backends 198.18.0.11, .12, ... (two-armed: 198.18.88.11, .12, ...)
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Stop drlb and everything else in the testbed's namespaces, remove them and the state
    /// directory. Exit status 0 also when nothing was there.
    Down {
        #[arg(long)]
        name: String,
    },
    /// Keep the pass program attached to each INTERFACE of this namespace until SIGTERM (what
    /// `up` runs on the bridge's side of the director's veths).
    #[command(hide = true)]
    HoldPass {
        #[arg(long = "interface", required = true)]
        interfaces: Vec<String>,
    },
}

#[derive(Subcommand)]
enum VipCommand {
    /// Answer ARP for the VIPs and forward their traffic; announce them with gratuitous ARP.
    Activate {
        #[arg(long, default_value = DEFAULT_STATE_DIR)]
        state_dir: PathBuf,
    },
    /// Stop answering ARP for the VIPs and stop forwarding (standby). Works without a running
    /// daemon too: it then makes the pinned data plane a standby itself.
    Deactivate {
        #[arg(long, default_value = DEFAULT_STATE_DIR)]
        state_dir: PathBuf,
    },
}

#[derive(Args)]
struct RealserverTarget {
    /// A VIP this host serves (repeatable).
    #[arg(long = "vip", required = true)]
    vips: Vec<IpAddr>,
    /// The interface facing the director; default: the default route's, else the only one
    /// with an IPv4 address.
    #[arg(long)]
    interface: Option<String>,
}

#[derive(Subcommand)]
enum RealserverCommand {
    /// Put each VIP on lo as /32 and set arp_ignore=1, arp_announce=2 on all, lo and the
    /// interface. Idempotent.
    Setup {
        #[command(flatten)]
        target: RealserverTarget,
        /// Also write a sysctl.d file and a systemd unit that applies everything again at boot,
        /// after the network managers (which may reset the settings).
        #[arg(long)]
        persist: bool,
        /// Where --persist writes (etc/sysctl.d, etc/systemd/system, var/lib/drlb and
        /// usr/local/sbin below it); for tests.
        #[arg(long, default_value = "/", hide = true)]
        root: PathBuf,
        /// Where the settings replaced by the first setup are recorded for teardown, without
        /// --persist (with it: /var/lib/drlb, which a reboot keeps).
        #[arg(long, default_value = DEFAULT_STATE_DIR)]
        state_dir: PathBuf,
    },
    /// Check the VIPs and the ARP settings as the kernel applies them; every problem is named
    /// with its fix (exit status 1 when anything is wrong).
    Check {
        #[command(flatten)]
        target: RealserverTarget,
    },
    /// Undo setup: the VIPs off lo, the persisted files removed, the ARP settings restored.
    Teardown {
        #[command(flatten)]
        target: RealserverTarget,
        #[arg(long, default_value = "/", hide = true)]
        root: PathBuf,
        #[arg(long, default_value = DEFAULT_STATE_DIR)]
        state_dir: PathBuf,
    },
}

#[derive(Args)]
struct Target {
    /// The service, as PROTOCOL/VIP:PORT (e.g. tcp/198.18.0.100:8080, tcp/[2001:db8::100]:8080).
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
        /// IPv4 or IPv6 (`2001:db8::11`), of the service VIP's family.
        #[arg(long, short, value_parser = backend_address)]
        address: IpAddr,
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
        /// IPv4 or IPv6 (`2001:db8::11`), of the service VIP's family.
        #[arg(long, short, value_parser = backend_address)]
        address: IpAddr,
    },
    /// Change a backend's weight; 0 drains it (no new flows, established ones continue).
    SetWeight {
        #[command(flatten)]
        target: Target,
        /// IPv4 or IPv6 (`2001:db8::11`), of the service VIP's family.
        #[arg(long, short, value_parser = backend_address)]
        address: IpAddr,
        #[arg(long, short)]
        weight: u32,
    },
}

pub fn main() -> Result<()> {
    let cli = Cli::parse();
    // Import has exit statuses of its own (0, 1, 2) and needs no runtime.
    if let Command::Import(command) = cli.command {
        std::process::exit(import_command(command));
    }
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => logs.json().init(),
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match cli.command {
            Command::Run {
                config,
                state_dir,
                standby,
            } => {
                daemon::run(RunOptions {
                    config,
                    state_dir,
                    standby,
                })
                .await
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
            Command::List {
                stats,
                rate,
                exact,
                state_dir,
            } => match control::call(&state_dir, &Request::Stats).await? {
                Response::Stats(report) => {
                    let columns = if stats {
                        list::Columns::Stats
                    } else if rate {
                        list::Columns::Rate
                    } else {
                        list::Columns::Plain
                    };
                    print!("{}", list::render(&report, columns, exact));
                    Ok(())
                }
                other => unexpected(other),
            },
            Command::Service(command) => {
                let (state_dir, change) = service_change(command);
                send_change(&state_dir, change).await
            }
            Command::Backend(command) => {
                let (state_dir, change) = backend_change(command);
                send_change(&state_dir, change).await
            }
            Command::Down { state_dir, pin_dir } => down(&state_dir, pin_dir).await,
            Command::InstallUnit {
                config,
                state_dir,
                print,
            } => {
                if print {
                    let binary =
                        std::env::current_exe().context("cannot tell where the drlb binary is")?;
                    print!("{}", systemd::unit(&binary, &config, &state_dir));
                } else {
                    for line in systemd::install(&config, &state_dir)? {
                        println!("{line}");
                    }
                }
                Ok(())
            }
            Command::Vip(VipCommand::Activate { state_dir }) => vip(&state_dir, true).await,
            Command::Vip(VipCommand::Deactivate { state_dir }) => vip(&state_dir, false).await,
            Command::Doctor {
                state_dir,
                count,
                wait_ms,
            } => {
                let findings = doctor::run(&doctor::Options {
                    state_dir: &state_dir,
                    count,
                    wait: std::time::Duration::from_millis(wait_ms),
                })
                .await?;
                print!("{}", doctor::render(&findings));
                let problems = findings.iter().filter(|f| f.problem).count();
                if problems > 0 {
                    bail!("{problems} problem(s) found");
                }
                Ok(())
            }
            Command::Realserver(command) => realserver_command(command).await,
            Command::Testbed(command) => testbed_command(command).await,
            Command::Import(_) => unreachable!("handled before the runtime starts"),
        }
    })
}

/// `drlb import`: the config on stdout, what was not translated on stderr; the exit status.
fn import_command(command: ImportCommand) -> i32 {
    use std::io::{Read as _, Write as _};

    use crate::import;

    let unreadable = |what: &str, e: &dyn std::fmt::Display| {
        eprintln!("drlb: error: cannot read {what}: {e}");
        import::EXIT_UNREADABLE
    };
    let outcome = match command {
        ImportCommand::Keepalived {
            options,
            config_id,
            file,
        } => {
            let options = import::Options {
                convert_to_dr: options.convert_to_dr,
                interface: options.interface,
                config_id,
            };
            match import::keepalived(&file, &import::source::FsSource, &options) {
                Ok(outcome) => outcome,
                Err(e) => return unreadable(&file.display().to_string(), &e),
            }
        }
        ImportCommand::Ipvsadm { options, file } => {
            let options = import::Options {
                convert_to_dr: options.convert_to_dr,
                interface: options.interface,
                config_id: None,
            };
            let (name, bytes) = match file.filter(|f| f.as_os_str() != "-") {
                Some(file) => match std::fs::read(&file) {
                    Ok(bytes) => (file.display().to_string(), bytes),
                    Err(e) => return unreadable(&file.display().to_string(), &e),
                },
                None => {
                    let mut bytes = Vec::new();
                    if let Err(e) = std::io::stdin().read_to_end(&mut bytes) {
                        return unreadable("standard input", &e);
                    }
                    ("<stdin>".to_owned(), bytes)
                }
            };
            let text = String::from_utf8_lossy(&bytes);
            import::ipvsadm(&text, &name, &options)
        }
    };
    // The output must be what `drlb run` accepts; anything else is a bug in the import.
    if let Err(e) = crate::config::Config::parse(&outcome.config) {
        eprintln!(
            "drlb: error: the imported config does not validate (a bug in drlb import, please report it): {e:#}"
        );
        return import::EXIT_INCOMPLETE;
    }
    print!("{}", outcome.config);
    let _ = std::io::stdout().flush();
    for diagnostic in &outcome.diagnostics {
        eprintln!("{diagnostic}");
    }
    let code = outcome.exit_code();
    if code != import::EXIT_TRANSLATED {
        eprintln!(
            "drlb: {} part(s) left out; the output holds the rest",
            outcome.left_out().count()
        );
    }
    code
}

/// `drlb vip activate|deactivate`: recorded in the state directory first, so that a daemon
/// started later with --standby follows it, then applied by the running daemon.
/// `drlb down`: refused while a daemon answers; else removes the pinned data plane.
async fn down(state_dir: &std::path::Path, pin_dir: Option<PathBuf>) -> Result<()> {
    if control::call(state_dir, &Request::Stats).await.is_ok() {
        bail!(
            "drlb is running with --state-dir {}: stop it first (SIGTERM, or `systemctl stop drlb`), then run `drlb down`",
            state_dir.display()
        );
    }
    let root = pin_dir.unwrap_or_else(|| PinDir::recorded_or_default(state_dir));
    let Some(pins) = PinDir::existing(&root) else {
        println!(
            "nothing is pinned in {}: no data plane to remove",
            root.display()
        );
        return Ok(());
    };
    for line in pins.remove(Some(state_dir))? {
        println!("{line}");
    }
    println!("the data plane in {} is removed", root.display());
    Ok(())
}

async fn vip(state_dir: &std::path::Path, active: bool) -> Result<()> {
    failover::record(state_dir, active)?;
    let request = if active {
        Request::Activate
    } else {
        Request::Deactivate
    };
    match control::call(state_dir, &request).await {
        Ok(Response::Applied(effects)) if effects.is_empty() => {
            println!(
                "director {} already",
                if active { "active" } else { "standby" }
            );
            Ok(())
        }
        Ok(Response::Applied(effects)) => {
            for effect in effects {
                println!("{effect}");
            }
            Ok(())
        }
        Ok(other) => unexpected(other),
        Err(e) if !active => {
            // No daemon: the pinned data plane may still be forwarding and answering ARP. A
            // standby must stop both now, not when drlb comes back.
            let root = PinDir::recorded_or_default(state_dir);
            match PinDir::existing(&root).filter(PinDir::holds_maps) {
                Some(pins) => {
                    let done = offline::deactivate(&pins).with_context(|| {
                        format!(
                            "{e:#}; and making the pinned data plane in {} a standby failed",
                            root.display()
                        )
                    })?;
                    println!(
                        "no drlb daemon runs: the pinned data plane in {} is now a standby ({} VIP(s) no longer answered, {} service(s) no longer forwarded)",
                        root.display(),
                        done.vips,
                        done.services
                    );
                }
                None => eprintln!(
                    "drlb: warning: {e:#}; no pinned data plane in {}; recorded in {}: `drlb run --standby --state-dir {}` will start standby",
                    root.display(),
                    failover::state_file(state_dir).display(),
                    state_dir.display()
                ),
            }
            Ok(())
        }
        Err(e) => {
            eprintln!(
                "drlb: warning: {e:#}; recorded in {}: `drlb run --standby --state-dir {}` will start {}",
                failover::state_file(state_dir).display(),
                state_dir.display(),
                if active { "active" } else { "standby" }
            );
            Ok(())
        }
    }
}

async fn testbed_command(command: TestbedCommand) -> Result<()> {
    match command {
        TestbedCommand::Up {
            name,
            servers,
            two_armed,
            ipv6,
            config,
        } => {
            // Blocking work (commands, waits) off the runtime's only thread.
            let plan = tokio::task::spawn_blocking(move || {
                testbed::up(&testbed::UpOptions {
                    name: &name,
                    servers,
                    two_armed,
                    ipv6,
                    config: config.as_deref(),
                })
            })
            .await??;
            println!("{}", plan.describe());
            Ok(())
        }
        TestbedCommand::Down { name } => {
            let removed = tokio::task::spawn_blocking(move || testbed::down(&name)).await??;
            if removed.is_empty() {
                eprintln!("drlb: nothing to remove");
            }
            for what in removed {
                eprintln!("removed {what}");
            }
            Ok(())
        }
        TestbedCommand::HoldPass { interfaces } => testbed::hold_pass(&interfaces).await,
    }
}

async fn realserver_command(command: RealserverCommand) -> Result<()> {
    let lines = match command {
        RealserverCommand::Setup {
            target,
            persist,
            root,
            state_dir,
        } => {
            realserver::setup(&realserver::SetupOptions {
                vips: &target.vips,
                interface: target.interface.as_deref(),
                persist,
                root: &root,
                state_dir: &state_dir,
            })
            .await?
        }
        RealserverCommand::Check { target } => {
            let findings = realserver::check(&target.vips, target.interface.as_deref()).await?;
            print!("{}", realserver::render(&findings));
            let problems = findings.iter().filter(|f| f.is_problem()).count();
            if problems > 0 {
                bail!("{problems} problem(s): this host is not a working LVS-DR real server");
            }
            return Ok(());
        }
        RealserverCommand::Teardown {
            target,
            root,
            state_dir,
        } => {
            realserver::teardown(&realserver::TeardownOptions {
                vips: &target.vips,
                interface: target.interface.as_deref(),
                root: &root,
                state_dir: &state_dir,
            })
            .await?
        }
    };
    for line in lines {
        println!("{line}");
    }
    Ok(())
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

/// A backend's address, IPv4 or IPv6; brackets around an IPv6 one are forgiven (a backend
/// has no port: DR keeps the service's).
fn backend_address(text: &str) -> Result<IpAddr, String> {
    text.strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(text)
        .parse()
        .map_err(|_| {
            format!(
                "{text:?} is not an IP address: write it as 198.18.0.14 or 2001:db8::14 (no port: \
                 a backend takes the service's)"
            )
        })
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

#[cfg(test)]
mod tests {
    use super::backend_address;

    #[test]
    fn backend_addresses_of_either_family_and_a_hint_otherwise() {
        for (text, address) in [
            ("198.18.0.14", "198.18.0.14"),
            ("2001:db8::14", "2001:db8::14"),
            ("[2001:db8::14]", "2001:db8::14"),
        ] {
            assert_eq!(backend_address(text).unwrap().to_string(), address);
        }
        for text in ["198.18.0.14:80", "[2001:db8::14]:80", "2001:db8::zz"] {
            let err = backend_address(text).unwrap_err();
            assert!(err.contains("2001:db8::14 (no port"), "{err}");
        }
    }
}
