//! `drlb run`: validates the config, loads the program, fills its maps, attaches it, announces
//! the VIPs, then serves the control socket and keeps the backends' MACs current until SIGINT
//! or SIGTERM, when it detaches.
//!
//! Order matters: everything that can fail on bad input happens before the program is attached,
//! and the maps are complete before the first frame arrives, so a bad config never leaves a
//! half-applied data plane.

use std::{
    net::Ipv4Addr,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use lb_common::{Backend, ServiceKey, VIP_FLAG_ACTIVE, Verdict, Vip, ipv4_mapped};
use tokio::signal::unix::{SignalKind, signal};
use tracing::{info, warn};

use crate::{
    config::{Config, ServiceConfig, XdpMode},
    control::{self, Request, Response},
    dataplane::Dataplane,
    garp::{self, FrameSender},
    loader::{self, AttachMode},
    netlink::{InterfaceInfo, NeighbourMacs, Netlink},
    stats::{BackendStats, Count, ServiceStats, StatsReport, format_mac},
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

pub struct RunOptions {
    pub config: PathBuf,
    pub state_dir: PathBuf,
}

pub async fn run(options: RunOptions) -> Result<()> {
    let config = Config::load(&options.config)?;
    require_root()?;
    let netlink = Netlink::connect()?;
    let interface = netlink.interface(&config.director.interface).await?;
    config
        .validate_for_interface(&interface.addresses())
        .with_context(|| format!("in {}", options.config.display()))?;
    let control = control::bind(&options.state_dir).await?;

    let mut ebpf = loader::load()?;
    start_ebpf_logger(&mut ebpf);
    let mut director = Director::new(&config, interface.clone(), Dataplane::take_from(&mut ebpf)?);
    director
        .dataplane
        .set_interface(interface.ifindex, interface.mac)?;
    let macs = resolve_backends(&netlink, &director).await?;
    director.apply_neighbours(&macs)?;
    director.publish_vips()?;

    let mode = match config.director.xdp_mode {
        XdpMode::Native => AttachMode::Native,
        XdpMode::Generic => AttachMode::Generic,
    };
    let link = loader::attach(&mut ebpf, &interface.name, interface.ifindex, mode)?;
    info!(interface = %interface.name, mode = director.mode_name(), "XDP program attached");
    announce_vips(&director).await;
    control.publish()?;
    info!(state_dir = %options.state_dir.display(), services = director.services.len(), "drlb ready");

    let served = serve(&netlink, &mut director, &control).await;
    loader::detach(&mut ebpf, link)?;
    info!(interface = %interface.name, "XDP program detached");
    served
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

/// Asks the kernel to resolve every backend without a configured MAC, and waits a little for
/// the answers.
async fn resolve_backends(netlink: &Netlink, director: &Director) -> Result<NeighbourMacs> {
    let ifindex = director.interface.ifindex;
    let wanted: Vec<Ipv4Addr> = director.backends_needing_neighbours().collect();
    for &addr in &wanted {
        netlink.keep_resolved(ifindex, addr).await?;
    }
    let deadline = Instant::now() + STARTUP_RESOLVE_TIMEOUT;
    loop {
        let macs = netlink.neighbour_macs(ifindex).await?;
        let all_known = wanted.iter().all(|a| matches!(macs.get(a), Some(Some(_))));
        if all_known || Instant::now() >= deadline {
            return Ok(macs);
        }
        tokio::time::sleep(RESOLVE_POLL).await;
    }
}

async fn announce_vips(director: &Director) {
    let sender = match FrameSender::open(director.interface.ifindex) {
        Ok(sender) => sender,
        Err(e) => return warn!("VIPs not announced: {e:#}"),
    };
    for round in 0..ANNOUNCE_COUNT {
        if round > 0 {
            tokio::time::sleep(ANNOUNCE_GAP).await;
        }
        for vip in director.vips() {
            if let Err(e) = sender.send(&garp::announcement(director.interface.mac, vip)) {
                warn!(%vip, "gratuitous ARP failed: {e:#}");
            }
        }
    }
    info!(vips = ?director.vips(), "VIPs announced with gratuitous ARP");
}

async fn serve(netlink: &Netlink, director: &mut Director, control: &control::Bound) -> Result<()> {
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let mut refresh = tokio::time::interval(NEIGHBOUR_REFRESH);
    loop {
        tokio::select! {
            _ = sigterm.recv() => {
                info!("SIGTERM: stopping");
                return Ok(());
            }
            _ = sigint.recv() => {
                info!("SIGINT: stopping");
                return Ok(());
            }
            _ = sighup.recv() => warn!("SIGHUP: reloading the config is not supported yet; nothing changed"),
            accepted = control.listener.accept() => match accepted {
                Ok((mut stream, _)) => {
                    let response = match control::read_request(&mut stream).await {
                        Ok(Request::Stats) => director.stats().map_or_else(|e| Response::Error(format!("{e:#}")), Response::Stats),
                        Err(e) => Response::Error(format!("{e:#}")),
                    };
                    if let Err(e) = control::write_response(&mut stream, &response).await {
                        warn!("control client went away: {e:#}");
                    }
                }
                Err(e) => warn!("control socket: {e}"),
            },
            _ = refresh.tick() => {
                if let Err(e) = refresh_neighbours(netlink, director).await {
                    warn!("neighbour refresh failed: {e:#}");
                }
            }
        }
    }
}

async fn refresh_neighbours(netlink: &Netlink, director: &mut Director) -> Result<()> {
    let ifindex = director.interface.ifindex;
    let macs = netlink.neighbour_macs(ifindex).await?;
    // Entries someone deleted (e.g. `ip neigh flush`) are recreated; failed ones the kernel
    // keeps retrying by itself, as they are managed.
    let missing: Vec<Ipv4Addr> = director
        .backends_needing_neighbours()
        .filter(|a| !macs.contains_key(a))
        .collect();
    for addr in missing {
        netlink.keep_resolved(ifindex, addr).await?;
    }
    director.apply_neighbours(&macs)
}

/// A backend as the daemon tracks it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct BackendState {
    address: Ipv4Addr,
    weight: u32,
    configured_mac: Option<[u8; 6]>,
    neighbour_mac: Option<[u8; 6]>,
    /// Its counter slot within the service.
    counter: u32,
}

impl BackendState {
    fn mac(&self) -> Option<[u8; 6]> {
        self.configured_mac.or(self.neighbour_mac)
    }

    fn state(&self) -> &'static str {
        match (self.weight, self.mac()) {
            (0, _) => "drained",
            (_, None) => "no-mac",
            _ => "active",
        }
    }
}

#[derive(Clone, Debug)]
struct ServiceState {
    id: u32,
    config: ServiceConfig,
    key: ServiceKey,
    backends: Vec<BackendState>,
}

/// The daemon's view of what the data plane should hold, and the maps it writes it to.
struct Director {
    interface: InterfaceInfo,
    xdp_mode: XdpMode,
    services: Vec<ServiceState>,
    dataplane: Dataplane,
}

impl Director {
    fn new(config: &Config, interface: InterfaceInfo, dataplane: Dataplane) -> Self {
        let services = (0..)
            .zip(&config.services)
            .map(|(id, service)| ServiceState {
                id,
                key: service_key(service),
                config: service.clone(),
                backends: (0..)
                    .zip(&service.backends)
                    .map(|(counter, b)| BackendState {
                        address: b.address,
                        weight: b.weight,
                        configured_mac: b.mac.map(|m| m.into_array()),
                        neighbour_mac: None,
                        counter,
                    })
                    .collect(),
            })
            .collect();
        Self {
            interface,
            xdp_mode: config.director.xdp_mode,
            services,
            dataplane,
        }
    }

    fn mode_name(&self) -> &'static str {
        match self.xdp_mode {
            XdpMode::Native => "native",
            XdpMode::Generic => "generic",
        }
    }

    fn vips(&self) -> Vec<Ipv4Addr> {
        let mut vips: Vec<Ipv4Addr> = self.services.iter().map(|s| s.config.vip).collect();
        vips.sort_unstable();
        vips.dedup();
        vips
    }

    fn backends_needing_neighbours(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        self.services
            .iter()
            .flat_map(|s| &s.backends)
            .filter(|b| b.configured_mac.is_none())
            .map(|b| b.address)
    }

    fn publish_vips(&mut self) -> Result<()> {
        for vip in self.vips() {
            self.dataplane.set_vip(
                ipv4_mapped(vip.octets()),
                Vip {
                    flags: VIP_FLAG_ACTIVE,
                },
            )?;
        }
        Ok(())
    }

    /// Takes the neighbour table's MACs and republishes every service whose live backend list
    /// changed (and every service not published yet), logging each backend that joins or leaves.
    fn apply_neighbours(&mut self, macs: &NeighbourMacs) -> Result<()> {
        for service in &mut self.services {
            let first = self.dataplane.service(&service.key)?.is_none();
            let before = live_backends(service, &self.interface);
            for backend in &mut service.backends {
                let old = backend.mac();
                backend.neighbour_mac = macs.get(&backend.address).copied().flatten();
                if first || backend.mac() != old {
                    log_mac(&service.config, backend, old);
                }
            }
            let after = live_backends(service, &self.interface);
            if first || before != after {
                self.dataplane
                    .publish_service(&service.key, service.id, &after)
                    .with_context(|| {
                        format!("publishing service {} failed", service.config.name())
                    })?;
                info!(service = %service.config.name(), backends = after.len(), "service published");
            }
        }
        Ok(())
    }

    fn stats(&self) -> Result<StatsReport> {
        let mut services = Vec::new();
        for s in &self.services {
            let total = self.dataplane.service_counter(s.id)?;
            let mut backends = Vec::new();
            for b in &s.backends {
                let count = self.dataplane.backend_counter(s.id, b.counter)?;
                backends.push(BackendStats {
                    address: b.address.to_string(),
                    weight: b.weight,
                    mac: b.mac().map(format_mac),
                    state: b.state().to_owned(),
                    packets: count.packets,
                    bytes: count.bytes,
                });
            }
            services.push(ServiceStats {
                vip: s.config.vip.to_string(),
                port: s.config.port,
                protocol: s.config.protocol.to_string(),
                packets: total.packets,
                bytes: total.bytes,
                backends,
            });
        }
        let mut verdicts = std::collections::BTreeMap::new();
        for verdict in Verdict::ALL {
            verdicts.insert(
                verdict.name().to_owned(),
                Count::from(self.dataplane.verdict_counter(verdict)?),
            );
        }
        Ok(StatsReport {
            interface: self.interface.name.clone(),
            xdp_mode: self.mode_name().to_owned(),
            services,
            verdicts,
        })
    }
}

fn service_key(service: &ServiceConfig) -> ServiceKey {
    ServiceKey {
        addr: ipv4_mapped(service.vip.octets()),
        port_be: service.port.to_be(),
        protocol: service.protocol.number(),
        _pad: 0,
    }
}

/// The backends the program may choose, in config order: those with a MAC and a weight.
fn live_backends(service: &ServiceState, interface: &InterfaceInfo) -> Vec<Backend> {
    service
        .backends
        .iter()
        .filter(|b| b.weight > 0)
        .filter_map(|b| {
            Some(Backend {
                dst_mac: b.mac()?,
                src_mac: interface.mac,
                ifindex: interface.ifindex,
                counter: b.counter,
            })
        })
        .collect()
}

fn log_mac(service: &ServiceConfig, backend: &BackendState, old: Option<[u8; 6]>) {
    let service = service.name();
    let address = backend.address;
    match backend.mac() {
        Some(mac) => {
            info!(%service, backend = %address, mac = %format_mac(mac), "backend MAC known")
        }
        None if old.is_some() => {
            warn!(%service, backend = %address, "backend MAC lost (no ARP answer): left out until it resolves")
        }
        None => {
            warn!(%service, backend = %address, "backend MAC unknown (no ARP answer yet): left out until it resolves")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn interface() -> InterfaceInfo {
        InterfaceInfo {
            name: "eth0".into(),
            ifindex: 7,
            mac: [2, 0, 0, 0, 0, 2],
            ipv4: vec![],
        }
    }

    fn service(backends: Vec<BackendState>) -> ServiceState {
        let config = Config::parse("[director]\ninterface = \"eth0\"\n[[service]]\nvip = \"198.18.0.100\"\nport = 80\nprotocol = \"tcp\"\n")
            .unwrap()
            .services
            .remove(0);
        ServiceState {
            id: 3,
            key: service_key(&config),
            config,
            backends,
        }
    }

    fn backend(
        last: u8,
        weight: u32,
        configured: Option<u8>,
        neighbour: Option<u8>,
        counter: u32,
    ) -> BackendState {
        BackendState {
            address: Ipv4Addr::new(198, 18, 0, last),
            weight,
            configured_mac: configured.map(|m| [2, 0, 0, 0, 1, m]),
            neighbour_mac: neighbour.map(|m| [2, 0, 0, 0, 2, m]),
            counter,
        }
    }

    #[test]
    fn live_backends_skip_unknown_macs_and_zero_weights_and_keep_config_order() {
        let s = service(vec![
            backend(11, 1, None, Some(11), 0),
            backend(12, 1, None, None, 1),
            backend(13, 0, None, Some(13), 2),
            backend(14, 5, Some(14), Some(99), 3),
        ]);
        let live = live_backends(&s, &interface());
        assert_eq!(
            live,
            vec![
                Backend {
                    dst_mac: [2, 0, 0, 0, 2, 11],
                    src_mac: [2, 0, 0, 0, 0, 2],
                    ifindex: 7,
                    counter: 0
                },
                // A configured MAC wins over the neighbour table's.
                Backend {
                    dst_mac: [2, 0, 0, 0, 1, 14],
                    src_mac: [2, 0, 0, 0, 0, 2],
                    ifindex: 7,
                    counter: 3
                },
            ]
        );
    }

    #[test]
    fn backend_states() {
        assert_eq!(backend(11, 1, None, Some(1), 0).state(), "active");
        assert_eq!(backend(11, 1, None, None, 0).state(), "no-mac");
        assert_eq!(backend(11, 0, Some(1), None, 0).state(), "drained");
    }

    #[test]
    fn service_key_is_network_order() {
        let s = service(vec![]);
        assert_eq!(s.key.port_be.to_ne_bytes(), 80u16.to_be_bytes());
        assert_eq!(&s.key.addr[12..], &[198, 18, 0, 100]);
        assert_eq!(s.key.protocol, lb_common::IPPROTO_TCP);
    }
}
