//! `drlb run`: validates the config, loads the program, fills its maps, attaches it, announces
//! the VIPs, then serves until SIGINT or SIGTERM, when it detaches. While it runs it follows
//! the backends' MACs, runs health checks, applies changes from the CLI, and re-reads the
//! config file on SIGHUP (applying only the difference).
//!
//! Everything that can fail on bad input happens before the program is attached, and the maps
//! are complete before the first frame arrives, so a bad config never leaves a half-applied
//! data plane.

use std::{
    net::Ipv4Addr,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use aya::programs::xdp::XdpLinkId;
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::mpsc,
    task::JoinSet,
};
use tracing::{info, warn};

use crate::{
    arping::ArpSocket,
    config::{Config, ServiceId, XdpMode, egress_for},
    conflict::{self, ConflictMap},
    control::{self, Request, Response},
    dataplane::Dataplane,
    director::{self, Director},
    failover, garp, health,
    loader::{self, AttachMode},
    netlink::{InterfaceInfo, NeighbourMacs, Netlink},
    stats::{InterfaceStats, format_mac},
};

/// How long start-up waits for the kernel to resolve backends' MACs before it goes on without
/// the unresolved ones (they join as soon as they resolve).
const STARTUP_RESOLVE_TIMEOUT: Duration = Duration::from_secs(3);
const RESOLVE_POLL: Duration = Duration::from_millis(100);
/// How often the neighbour table is read to follow backends' MAC changes.
const NEIGHBOUR_REFRESH: Duration = Duration::from_secs(1);
/// Gratuitous ARP at start-up: a short burst, as routers may drop a single frame.
const ANNOUNCE_COUNT: u32 = 3;
const ANNOUNCE_GAP: Duration = Duration::from_millis(200);
/// Room for health results waiting for the main loop.
const HEALTH_QUEUE: usize = 1024;

pub struct RunOptions {
    pub config: PathBuf,
    pub state_dir: PathBuf,
    /// Start deactivated (failover pair), unless `drlb vip activate` was recorded since.
    pub standby: bool,
}

/// A health probe's result, sent from a checker task to the main loop.
struct HealthResult {
    service: ServiceId,
    backend: Ipv4Addr,
    result: Result<()>,
}

pub async fn run(options: RunOptions) -> Result<()> {
    let config = Config::load(&options.config)?;
    require_root()?;
    let netlink = Netlink::connect()?;
    let mut interfaces = Vec::new();
    for name in config.director.interface_names() {
        interfaces.push(netlink.interface(&name).await?);
    }
    let addresses: Vec<_> = interfaces.iter().map(InterfaceInfo::addresses).collect();
    config
        .validate_for_interfaces(&addresses)
        .with_context(|| format!("in {}", options.config.display()))?;
    let control =
        control::bind(&options.state_dir, config.director.control_group.as_deref()).await?;

    let mut ebpf = loader::load(director::map_sizes(&config))?;
    start_ebpf_logger(&mut ebpf);
    let mut director = Director::new(
        &config,
        interfaces.clone(),
        Dataplane::take_from(&mut ebpf)?,
    )?;
    let mut conflicts = conflict::Monitor::new(ConflictMap::take_from(&mut ebpf)?);
    let recorded = if options.standby {
        failover::recorded(&options.state_dir)?
    } else {
        None // a director outside a failover pair is always active
    };
    if !failover::starts_active(options.standby, recorded) {
        director.set_active(false)?;
        info!("starting as standby: no ARP answers and no forwarding until `drlb vip activate`");
    }
    // Ask the kernel for the backends' MACs before the first table is built, so the first
    // table already holds every backend that answers.
    let wanted: Vec<(u32, Ipv4Addr)> = config
        .services
        .iter()
        .flat_map(|s| &s.backends)
        .filter(|b| b.mac.is_none())
        .filter_map(|b| {
            let egress = egress_for(b, &addresses)?;
            let interface = interfaces.iter().find(|i| i.name == egress.name)?;
            Some((interface.ifindex, b.address))
        })
        .collect();
    let ifindexes: Vec<u32> = interfaces.iter().map(|i| i.ifindex).collect();
    let macs = resolve(&netlink, &ifindexes, &wanted).await?;
    director.set_neighbours(macs)?;
    for change in director.apply(config.clone())? {
        info!("{change}");
    }
    director.report_unresolved();

    // Attached last, to every interface: frames only arrive once the maps are complete, and
    // an egress interface runs XDP too (drivers need that to transmit redirected frames). An
    // error detaches what was attached (dropping `ebpf` closes the links).
    let _peer_programs = prepare_veth_peers(&netlink, &interfaces).await;
    let mut attached = Vec::new();
    for interface in &interfaces {
        let (link, mode) = attach(&mut ebpf, interface, config.director.xdp_mode)?;
        info!(interface = %interface.name, mode, "XDP program attached");
        attached.push((
            link,
            InterfaceStats {
                name: interface.name.clone(),
                mac: format_mac(interface.mac),
                xdp_mode: mode.to_owned(),
            },
        ));
    }
    if director.is_active() {
        announce_vips(&director).await;
    }
    control.publish()?;
    info!(state_dir = %options.state_dir.display(), services = config.services.len(), "drlb ready");

    let modes: Vec<InterfaceStats> = attached.iter().map(|(_, m)| m.clone()).collect();
    let served = serve(
        &netlink,
        &mut director,
        &control,
        &options,
        &modes,
        &mut conflicts,
    )
    .await;
    for (link, interface) in attached {
        loader::detach(&mut ebpf, link)?;
        info!(interface = %interface.name, "XDP program detached");
    }
    served
}

/// veth hands frames sent with XDP_TX or a redirect only to a peer that runs XDP (its NAPI is
/// off otherwise), whatever runs on the veth itself. A peer in this namespace gets drlb's pass
/// program, held while drlb runs; for a peer elsewhere drlb says what its owner must do.
async fn prepare_veth_peers(netlink: &Netlink, interfaces: &[InterfaceInfo]) -> Vec<aya::Ebpf> {
    let mut programs = Vec::new();
    for interface in interfaces {
        let Some(peer) = interface.veth_peer else {
            continue;
        };
        if !peer.same_namespace {
            warn!(
                interface = %interface.name,
                "a veth whose peer is in another network namespace: the frames drlb sends out of it \
                 arrive only if that peer runs an XDP program (an XDP_PASS one will do; see README)"
            );
            continue;
        }
        if interfaces.iter().any(|i| i.ifindex == peer.ifindex) {
            continue; // drlb runs on the peer too
        }
        let name = netlink
            .link_name(peer.ifindex)
            .await
            .unwrap_or_else(|_| peer.ifindex.to_string());
        match loader::attach_pass_program(peer.ifindex) {
            Ok(program) => {
                info!(interface = %interface.name, peer = %name, "pass program attached to the veth peer, so that it receives what drlb sends");
                programs.push(program);
            }
            Err(e) => warn!(
                interface = %interface.name,
                peer = %name,
                "could not attach the pass program to the veth peer ({e:#}); unless the peer runs XDP already, \
                 frames drlb sends out of {} are dropped",
                interface.name
            ),
        }
    }
    programs
}

/// Attaches the program to one interface in the configured mode; `auto` falls back from
/// native to generic. Returns the link and the mode it got.
fn attach(
    ebpf: &mut aya::Ebpf,
    interface: &InterfaceInfo,
    mode: XdpMode,
) -> Result<(XdpLinkId, &'static str)> {
    let (name, ifindex) = (&interface.name, interface.ifindex);
    match mode {
        XdpMode::Native => Ok((
            loader::attach(ebpf, name, ifindex, AttachMode::Native)?,
            "native",
        )),
        XdpMode::Generic => Ok((
            loader::attach(ebpf, name, ifindex, AttachMode::Generic)?,
            "generic",
        )),
        XdpMode::Auto => match loader::attach(ebpf, name, ifindex, AttachMode::Native) {
            Ok(link) => Ok((link, "native")),
            Err(e) => {
                warn!(interface = %name, "native XDP refused ({e:#}); falling back to generic mode");
                Ok((
                    loader::attach(ebpf, name, ifindex, AttachMode::Generic)?,
                    "generic",
                ))
            }
        },
    }
}

fn require_root() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "drlb run needs root (it loads an XDP program and writes BPF maps): run it with sudo"
        );
    }
    Ok(())
}

/// Forwards the program's log records (aya-log) to our logger.
fn start_ebpf_logger(ebpf: &mut aya::Ebpf) {
    let logger = match aya_log::EbpfLogger::init(ebpf) {
        Ok(logger) => logger,
        Err(e) => return warn!("the XDP program's log cannot be read: {e}"),
    };
    // SAFETY: the logger owns its ring-buffer fd, which stays open and the same for as long as
    // the AsyncFd owns the logger.
    let registered = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE)
    };
    let mut logger = match registered {
        Ok(logger) => logger,
        Err(e) => return warn!("the XDP program's log cannot be polled: {e}"),
    };
    tokio::spawn(async move {
        while let Ok(mut guard) = logger.readable_mut().await {
            guard.get_inner_mut().flush();
            guard.clear_ready();
        }
    });
}

/// Asks the kernel to resolve `wanted` and waits a little for the answers.
async fn resolve(
    netlink: &Netlink,
    ifindexes: &[u32],
    wanted: &[(u32, Ipv4Addr)],
) -> Result<NeighbourMacs> {
    for &(ifindex, addr) in wanted {
        netlink.keep_resolved(ifindex, addr).await?;
    }
    let deadline = Instant::now() + STARTUP_RESOLVE_TIMEOUT;
    loop {
        let macs = netlink.neighbour_macs(ifindexes).await?;
        let all_known = wanted.iter().all(|a| matches!(macs.get(a), Some(Some(_))));
        if all_known || Instant::now() >= deadline {
            return Ok(macs);
        }
        tokio::time::sleep(RESOLVE_POLL).await;
    }
}

/// Announces every VIP on every interface (the program answers ARP on all of them).
async fn announce_vips(director: &Director) {
    let socket = match ArpSocket::sender(0) {
        Ok(socket) => socket,
        Err(e) => return warn!("VIPs not announced: {e:#}"),
    };
    for round in 0..ANNOUNCE_COUNT {
        if round > 0 {
            tokio::time::sleep(ANNOUNCE_GAP).await;
        }
        for vip in director.vips() {
            for interface in director.interfaces() {
                let frame = garp::announcement(interface.mac, vip);
                if let Err(e) = socket.send_on(interface.ifindex, &frame) {
                    warn!(%vip, interface = %interface.name, "gratuitous ARP failed: {e:#}");
                }
            }
        }
    }
    info!(vips = ?director.vips(), "VIPs announced with gratuitous ARP");
}

/// One task per checked backend; all replaced whenever the config changes.
fn start_health_checks(director: &Director, results: &mpsc::Sender<HealthResult>) -> JoinSet<()> {
    let mut checkers = JoinSet::new();
    for (service, backend, check, target) in director.health_targets() {
        let results = results.clone();
        checkers.spawn(async move {
            let mut interval = tokio::time::interval(check.interval());
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                let result = health::probe(&check, target).await;
                if results
                    .send(HealthResult {
                        service,
                        backend,
                        result,
                    })
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
    }
    checkers
}

async fn serve(
    netlink: &Netlink,
    director: &mut Director,
    control: &control::Bound,
    options: &RunOptions,
    interfaces: &[InterfaceStats],
    conflicts: &mut conflict::Monitor,
) -> Result<()> {
    let mut announcer = failover::Announcer::default();
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let mut refresh = tokio::time::interval(NEIGHBOUR_REFRESH);
    let (health_tx, mut health_rx) = mpsc::channel(HEALTH_QUEUE);
    let mut checkers = start_health_checks(director, &health_tx);
    loop {
        let changed = tokio::select! {
            _ = sigterm.recv() => {
                info!("SIGTERM: stopping");
                return Ok(());
            }
            _ = sigint.recv() => {
                info!("SIGINT: stopping");
                return Ok(());
            }
            _ = sighup.recv() => reload(director, options),
            accepted = control.listener.accept() => match accepted {
                Ok((mut stream, _)) => {
                    let (response, changed) = match control.read_request(&mut stream).await {
                        Ok(Request::Stats) => (stats(director, interfaces, conflicts).map_or_else(|e| Response::Error(format!("{e:#}")), Response::Stats), false),
                        Ok(Request::Activate) => (failover_to(director, &mut announcer, true), false),
                        Ok(Request::Deactivate) => (failover_to(director, &mut announcer, false), false),
                        Ok(Request::Change { change }) => match change.edit(director.config()).and_then(|new| director.apply(new)) {
                            Ok(effects) => {
                                for effect in &effects {
                                    info!("control: {effect}");
                                }
                                (Response::Applied(effects), true)
                            }
                            Err(e) => {
                                warn!("control: change refused: {e:#}");
                                (Response::Error(format!("change refused, nothing changed: {e:#}")), false)
                            }
                        },
                        Err(e) => (Response::Error(format!("{e:#}")), false),
                    };
                    if let Err(e) = control::write_response(&mut stream, &response).await {
                        warn!("control client went away: {e:#}");
                    }
                    changed
                }
                Err(e) => {
                    warn!("control socket: {e}");
                    false
                }
            },
            Some(probe) = health_rx.recv() => {
                if let Err(e) = director.record_health(probe.service, probe.backend, &probe.result) {
                    warn!("applying a health change failed: {e:#}");
                }
                false
            }
            _ = refresh.tick() => {
                if let Err(e) = refresh_neighbours(netlink, director).await {
                    warn!("neighbour refresh failed: {e:#}");
                }
                conflicts.tick(&conflict::Context::of(director), &conflict::Probe::of(director));
                false
            }
        };
        if changed {
            checkers.abort_all();
            checkers = start_health_checks(director, &health_tx);
        }
    }
}

fn stats(
    director: &Director,
    interfaces: &[InterfaceStats],
    conflicts: &conflict::Monitor,
) -> Result<crate::stats::StatsReport> {
    let mut report = director.stats(interfaces.to_vec())?;
    report.arp_conflicts = conflicts.report(&conflict::Context::of(director))?;
    Ok(report)
}

/// `drlb vip activate|deactivate`: switches the director, and announces it when it becomes
/// active (a burst of gratuitous ARP, then a repeat).
fn failover_to(
    director: &mut Director,
    announcer: &mut failover::Announcer,
    active: bool,
) -> Response {
    if !active {
        announcer.stop();
    }
    match director.set_active(active) {
        Ok(effects) => {
            for effect in &effects {
                info!("control: {effect}");
            }
            if active {
                let interfaces = director.interfaces().iter().map(|i| (i.ifindex, i.mac));
                announcer.start(interfaces.collect(), director.vips());
            }
            Response::Applied(effects)
        }
        Err(e) => {
            warn!(
                "control: switching to {} failed: {e:#}",
                if active { "active" } else { "standby" }
            );
            Response::Error(format!("{e:#}"))
        }
    }
}

/// SIGHUP: re-reads the config file and applies the difference, or keeps everything as it is.
fn reload(director: &mut Director, options: &RunOptions) -> bool {
    match Config::load(&options.config).and_then(|config| director.apply(config)) {
        Ok(changes) if changes.is_empty() => {
            info!("SIGHUP: config unchanged");
            true
        }
        Ok(changes) => {
            for change in changes {
                info!("SIGHUP: {change}");
            }
            true
        }
        Err(e) => {
            warn!("SIGHUP: config refused, nothing changed: {e:#}");
            false
        }
    }
}

async fn refresh_neighbours(netlink: &Netlink, director: &mut Director) -> Result<()> {
    let ifindexes: Vec<u32> = director.interfaces().iter().map(|i| i.ifindex).collect();
    let macs = netlink.neighbour_macs(&ifindexes).await?;
    // Entries someone deleted (e.g. `ip neigh flush`) and those of backends added since are
    // (re)created; failed ones the kernel keeps retrying by itself, as they are managed.
    let missing: Vec<(u32, Ipv4Addr)> = director
        .backends_needing_neighbours()
        .filter(|key| !macs.contains_key(key))
        .collect();
    for (ifindex, addr) in missing {
        netlink.keep_resolved(ifindex, addr).await?;
    }
    director.set_neighbours(macs)
}
