//! The daemon (`drlb run`) and what it drives: the control socket ([`control`]), health checks
//! ([`health`]), failover between directors ([`failover`]) and the VIP conflict monitor
//! ([`conflict`]). It changes the data plane only through [`crate::director`]. `serve` holds
//! the loop and one handler per event; `startup` the steps before it.
//!
//! `drlb run`: validates the config, loads the program, fills its maps, attaches it, announces
//! the VIPs, then serves until SIGINT or SIGTERM, when it detaches. While it runs it follows
//! the backends' MACs, runs health checks, applies changes from the CLI, and re-reads the
//! config file on SIGHUP (applying only the difference).
//!
//! Everything that can fail on bad input happens before the program is attached, and the maps
//! are complete before the first frame arrives, so a bad config never leaves a half-applied
//! data plane.

pub mod announce;
pub mod conflict;
pub mod control;
pub mod failover;
pub mod health;
pub mod metrics;
mod serve;
mod startup;
pub mod systemd;

use std::{net::IpAddr, path::PathBuf, time::Duration};

use anyhow::{Context as _, Result};
use tracing::info;

use self::{conflict::ConflictMap, serve::Server};
use crate::{
    config::{Config, egress_for},
    dataplane::{
        Dataplane, loader,
        pins::{self, PinDir},
    },
    director::{self, Controller},
    net::{
        mac::format_mac,
        netlink::{AddressEvents, InterfaceInfo, Netlink},
    },
    report::stats::InterfaceStats,
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

pub async fn run(options: RunOptions) -> Result<()> {
    let config = Config::load(&options.config)?;
    failover::check_standby_option(options.standby, config.director.active_when)
        .with_context(|| format!("in {}", options.config.display()))?;
    startup::require_root()?;
    let netlink = Netlink::connect()?;
    let mut interfaces = Vec::new();
    for name in config.director.interface_names() {
        interfaces.push(netlink.interface(&name).await?);
    }
    let addresses: Vec<_> = interfaces.iter().map(InterfaceInfo::addresses).collect();
    config
        .validate_for_interfaces(&addresses)
        .with_context(|| format!("in {}", options.config.display()))?;
    let tagging: Vec<(String, bool)> = interfaces
        .iter()
        .map(|i| (i.name.clone(), i.vlan.is_some()))
        .collect();
    crate::config::check_vlan_mix(&tagging)
        .with_context(|| format!("in {}", options.config.display()))?;
    // Subscribed before the addresses are read, so no change falls between the two.
    let address_events = AddressEvents::subscribe()?;
    let control =
        control::bind(&options.state_dir, config.director.control_group.as_deref()).await?;
    let metrics = match config.director.metrics {
        Some(address) => Some(metrics::bind(address).await?),
        None => None,
    };
    // Before anything is loaded: a device name in use is refused with nothing changed.
    let routes = match &config.director.announce {
        Some(announce) => Some(announce::RouteAnnouncer::create(&netlink, announce).await?),
        None => None,
    };

    let ifindexes: Vec<u32> = interfaces.iter().map(|i| i.ifindex).collect();
    let served: Vec<(u32, u16)> = interfaces
        .iter()
        .map(|i| (i.xdp_ifindex(), i.vlan_id()))
        .collect();
    let sizes = loader::MapSizes {
        interface_slots: loader::interface_slots(&served)?,
        ..director::map_sizes(&config)
    };
    let pins = match &config.director.pin_dir {
        Some(dir) => PinDir::open(dir, false)?,
        None => PinDir::open(&pins::default_pin_dir(&options.state_dir), true)?,
    };
    pins.record_in(&options.state_dir)?;
    let (mut ebpf, adopting) = loader::load_pinned(sizes, &pins)?;
    // A first start that fails leaves nothing pinned (an adopted data plane stays as it was).
    let mut provisional = pins::Provisional::new(&pins, !adopting);
    startup::start_ebpf_logger(&mut ebpf);
    let dataplane = Dataplane::take_pinned(&mut ebpf, &pins)?;
    let mut director = if adopting {
        info!(pin_dir = %pins.root().display(), "a data plane is pinned there: adopting it");
        Controller::adopt(&config, interfaces.clone(), dataplane)?
    } else {
        info!(pin_dir = %pins.root().display(), "pinning a new data plane there");
        Controller::new(&config, interfaces.clone(), dataplane)?
    };
    director.set_local(netlink.ip_addresses(&ifindexes).await?)?;
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
    let wanted: Vec<(u32, IpAddr)> = config
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
    let macs = startup::resolve(&netlink, &ifindexes, &wanted).await?;
    director.set_neighbours(macs)?;
    for change in director.apply(config.clone())? {
        info!("{change}");
    }
    director.report_unresolved();
    failover::log_vips(&director);

    // Attached last, to every interface: frames only arrive once the maps are complete, and
    // an egress interface runs XDP too (drivers need that to transmit redirected frames). The
    // links are pinned: they stay when drlb exits, until `drlb down`.
    startup::prepare_veth_peers(&netlink, &interfaces, &pins).await;
    startup::detach_unlisted(&pins, &interfaces)?;
    let mut modes = Vec::new();
    // The VLANs of one trunk share the parent's attachment.
    let mut attached: Vec<(u32, String)> = Vec::new();
    for interface in &interfaces {
        let device = startup::device_of(&netlink, interface).await?;
        let mode = match attached.iter().find(|(i, _)| *i == device.ifindex) {
            Some((_, mode)) => mode.clone(),
            None => {
                let mode = startup::attach(&mut ebpf, &device, config.director.xdp_mode, &pins)?;
                attached.push((device.ifindex, mode.clone()));
                mode
            }
        };
        modes.push(InterfaceStats {
            name: interface.name.clone(),
            mac: format_mac(interface.mac),
            xdp_mode: mode,
        });
    }
    if director.is_active() {
        startup::announce_vips(&director).await;
    }
    control.publish()?;
    provisional.keep();
    info!(state_dir = %options.state_dir.display(), services = config.services.len(), "drlb ready");
    systemd::ready();

    let served = Server::new(
        &netlink,
        &mut director,
        &control,
        &options,
        &modes,
        &mut conflicts,
        address_events,
    )
    .with_metrics(metrics)
    .with_routes(routes)
    .serve()
    .await;
    systemd::stopping();
    info!(
        pin_dir = %pins.root().display(),
        "drlb stops; the data plane goes on forwarding on its last state (health checks stop \
         until drlb runs again); `drlb down` detaches it"
    );
    served
}
