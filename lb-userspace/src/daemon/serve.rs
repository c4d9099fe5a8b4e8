//! The serving loop of `drlb run`: signals, control requests, health results and a one-second
//! tick, each handled by a named method of [`Server`].

use std::{
    net::{IpAddr, Ipv4Addr},
    sync::Arc,
    time::Instant,
};

use anyhow::Result;
use lb_common::Event;
use tokio::{
    net::{TcpListener, UnixStream},
    signal::unix::{SignalKind, signal},
    sync::{mpsc, watch},
};
use tracing::{info, warn};

use super::{
    HEALTH_QUEUE, NEIGHBOUR_REFRESH, RunOptions,
    announce::RouteAnnouncer,
    conflict,
    control::{self, Request, Response},
    failover,
    health::{HealthResult, Prober},
    metrics,
};
use crate::{
    config::Config,
    director::{Change, Controller, edit_all, publish},
    net::netlink::{AddressEvents, Netlink},
    report::{
        rate::{Estimator, RATE_INTERVAL},
        stats::{self, FlowTableStats, InterfaceStats, StatsReport, bad_checksum_advice},
    },
};

/// The serving loop's state: what each event handler needs.
pub struct Server<'a> {
    pub netlink: &'a Netlink,
    pub director: &'a mut Controller,
    pub control: &'a control::Bound,
    pub options: &'a RunOptions,
    pub interfaces: &'a [InterfaceStats],
    pub conflicts: &'a mut conflict::Monitor,
    announcer: failover::Announcer,
    /// The kernel's address events: VIPs appearing on or leaving the director's interfaces.
    address_events: AddressEvents,
    flow_table: Option<FlowTableStats>,
    /// The veth checksum trap is logged once (see `Event::BadChecksum`).
    bad_checksums_logged: bool,
    /// The counters' last sample, for the rates.
    rates: Estimator,
    /// The report the metrics server reads, refreshed every tick.
    snapshot: watch::Sender<Option<Arc<StatsReport>>>,
    /// `[director] metrics` as read at start-up (a change needs a restart).
    metrics_address: Option<std::net::SocketAddr>,
    /// `[director] announce`: the servable VIPs as routes for BIRD.
    routes: Option<RouteAnnouncer>,
    /// Clients whose change was taken, answered once it is live (`Controller::is_live`).
    waiting: Vec<(UnixStream, Response, u64)>,
}

/// Whether an event changed the services (health checks then restart on the new set).
type Changed = bool;

impl<'a> Server<'a> {
    pub fn new(
        netlink: &'a Netlink,
        director: &'a mut Controller,
        control: &'a control::Bound,
        options: &'a RunOptions,
        interfaces: &'a [InterfaceStats],
        conflicts: &'a mut conflict::Monitor,
        address_events: AddressEvents,
    ) -> Self {
        let flow_table = FlowTableStats::of_this_host(director.config().director.flow_table_size)
            .map_err(|e| warn!("the flow table's capacity is unknown: {e:#}"))
            .ok();
        let metrics_address = director.config().director.metrics;
        Self {
            netlink,
            director,
            control,
            options,
            interfaces,
            conflicts,
            announcer: failover::Announcer::default(),
            address_events,
            flow_table,
            bad_checksums_logged: false,
            rates: Estimator::new(RATE_INTERVAL),
            metrics_address,
            snapshot: watch::Sender::new(None),
            routes: None,
            waiting: Vec::new(),
        }
    }

    /// Keeps the servable VIPs announced as routes (`[director] announce`).
    #[must_use]
    pub fn with_routes(mut self, routes: Option<RouteAnnouncer>) -> Self {
        self.routes = routes;
        self
    }

    /// Brings the announced routes in line with what the director can serve now.
    async fn follow_routes(&mut self) {
        if let Some(routes) = &mut self.routes {
            routes.follow(self.netlink, self.director).await;
        }
    }

    /// Serves Prometheus metrics on `listener` (if any) from the report each tick publishes.
    #[must_use]
    pub fn with_metrics(self, listener: Option<TcpListener>) -> Self {
        if let Some(listener) = listener {
            metrics::spawn(listener, self.snapshot.subscribe());
        }
        self
    }

    /// Serves until SIGTERM or SIGINT: every event goes to its handler. Health probes run on
    /// a thread of their own ([`Prober`]), table builds and grace periods on another
    /// ([`publish::Builder`]): this loop takes changes and writes the maps. On the way out every
    /// announced VIP is withdrawn.
    pub async fn serve(mut self) -> Result<()> {
        let served = self.serve_events().await;
        if let Some(routes) = self.routes.take() {
            routes.withdraw_all(self.netlink).await;
        }
        served
    }

    async fn serve_events(&mut self) -> Result<()> {
        let mut sigterm = signal(SignalKind::terminate())?;
        let mut sigint = signal(SignalKind::interrupt())?;
        let mut sighup = signal(SignalKind::hangup())?;
        let mut refresh = tokio::time::interval(NEIGHBOUR_REFRESH);
        let (health_tx, mut health_rx) = mpsc::channel(HEALTH_QUEUE);
        let prober = Prober::spawn(health_tx)?;
        prober.check(self.director.health_targets());
        self.director.defer_publishes();
        let mut builder = publish::Builder::spawn()?;
        loop {
            // After start-up and after every event (health, change, failover, tick).
            self.follow_routes().await;
            let changed = tokio::select! {
                _ = sigterm.recv() => {
                    info!("SIGTERM: stopping");
                    self.publish_before_stopping().await;
                    return Ok(());
                }
                _ = sigint.recv() => {
                    info!("SIGINT: stopping");
                    self.publish_before_stopping().await;
                    return Ok(());
                }
                Some(built) = builder.next() => {
                    if let Err(e) = self.director.finish(built) {
                        warn!("publishing a table failed (tried again): {e:#}");
                    }
                    false
                }
                _ = sighup.recv() => self.on_sighup(),
                accepted = self.control.listener.accept() => match accepted {
                    Ok((stream, _)) => self.on_control(stream).await,
                    Err(e) => {
                        warn!("control socket: {e}");
                        false
                    }
                },
                Some(probe) = health_rx.recv() => self.on_health(&probe),
                Some(()) = self.address_events.changed() => self.on_addresses().await,
                _ = refresh.tick() => self.on_tick().await,
            };
            if changed {
                prober.check(self.director.health_targets());
            }
            self.submit_jobs(&builder);
            self.answer_live().await;
        }
    }

    /// Answers the clients whose change is live now.
    async fn answer_live(&mut self) {
        if self.waiting.is_empty() {
            return;
        }
        let (live, waiting) = std::mem::take(&mut self.waiting)
            .into_iter()
            .partition(|(_, _, mark)| self.director.is_live(*mark));
        self.waiting = waiting;
        for (mut stream, response, _) in live {
            if let Err(e) = control::write_response(&mut stream, &response).await {
                warn!("control client went away: {e:#}");
            }
        }
    }

    /// Hands the table builds and grace periods now due to the builder.
    fn submit_jobs(&mut self, builder: &publish::Builder) {
        let jobs = match self.director.jobs() {
            Ok(jobs) => jobs,
            Err(e) => {
                warn!("publishing a table failed (tried again): {e:#}");
                return;
            }
        };
        for job in jobs {
            if let Err(e) = builder.submit(job) {
                warn!("{e:#}");
            }
        }
    }

    /// Changes taken but not yet published are published before the daemon stops, so the
    /// data plane goes on with every change that was acknowledged.
    async fn publish_before_stopping(&mut self) {
        if let Err(e) = self.director.publish_now() {
            warn!("publishing the last changes before stopping failed: {e:#}");
        }
        self.answer_live().await;
    }

    /// SIGHUP: re-reads the config file and applies the difference, or keeps everything as it is.
    fn on_sighup(&mut self) -> Changed {
        let applied =
            Config::load(&self.options.config).and_then(|config| self.director.apply(config));
        if applied.is_ok() && self.director.config().director.metrics != self.metrics_address {
            warn!("SIGHUP: [director] metrics changed: it takes effect when drlb restarts");
        }
        match applied {
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

    /// One request on the control socket, answered.
    async fn on_control(&mut self, mut stream: UnixStream) -> Changed {
        let (response, changed) = match self.control.read_request(&mut stream).await {
            Ok(Request::Stats) => (
                self.stats()
                    .map_or_else(|e| Response::Error(format!("{e:#}")), Response::Stats),
                false,
            ),
            Ok(Request::Activate) => (self.failover_to(true), false),
            Ok(Request::Deactivate) => (self.failover_to(false), false),
            Ok(Request::Change { change }) => self.on_change(std::slice::from_ref(&change)),
            Ok(Request::Changes { changes }) => self.on_change(&changes),
            Err(e) => (Response::Error(format!("{e:#}")), false),
        };
        if changed {
            // Answered once the change is live in the data plane (`answer_live`).
            let mark = self.director.change_mark();
            self.waiting.push((stream, response, mark));
            return changed;
        }
        if let Err(e) = control::write_response(&mut stream, &response).await {
            warn!("control client went away: {e:#}");
        }
        changed
    }

    /// `drlb service|backend ...` (or a batch of them, applied as one change): the change
    /// applied whole, or refused whole.
    fn on_change(&mut self, changes: &[Change]) -> (Response, Changed) {
        match edit_all(changes, self.director.config()).and_then(|new| self.director.apply(new)) {
            Ok(effects) => {
                for effect in &effects {
                    info!("control: {effect}");
                }
                (Response::Applied(effects), true)
            }
            Err(e) => {
                warn!("control: change refused: {e:#}");
                (
                    Response::Error(format!("change refused, nothing changed: {e:#}")),
                    false,
                )
            }
        }
    }

    fn on_health(&mut self, probe: &HealthResult) -> Changed {
        if let Err(e) = self
            .director
            .record_health(probe.service, probe.backend, &probe.result)
        {
            warn!("applying a health change failed: {e:#}");
        }
        false
    }

    /// An address (IPv4 or IPv6) was added or removed: the director's addresses are read again
    /// and the VIPs among them become local (with `active_when = "vip-assigned"`: active), the
    /// others not. VIPs that became active are announced (keepalived announces the addresses it
    /// adds too; drlb's announcement comes once forwarding is on, and costs nothing).
    async fn on_addresses(&mut self) -> Changed {
        let ifindexes: Vec<u32> = self
            .director
            .interfaces()
            .iter()
            .map(|i| i.ifindex)
            .collect();
        let switched = match self.netlink.ip_addresses(&ifindexes).await {
            Ok(addresses) => self.director.set_local(addresses),
            Err(e) => Err(e),
        };
        match switched {
            Ok(switched) => {
                for effect in &switched.effects {
                    info!("address change: {effect}");
                }
                if !switched.effects.is_empty() {
                    self.announcer.stop();
                }
                if !switched.activated.is_empty() {
                    self.announce(self.director.active_vips());
                }
            }
            Err(e) => warn!("following the director's addresses failed: {e:#}"),
        }
        false
    }

    /// Gratuitous ARP (unsolicited NA for IPv6) for `vips` on every interface: a burst, then a
    /// repeat. None with `arp = false` (routed VIPs).
    fn announce(&mut self, vips: Vec<IpAddr>) {
        if !self.director.config().director.arp {
            return;
        }
        let interfaces = self
            .director
            .interfaces()
            .iter()
            .map(|i| (i.ifindex, i.mac));
        self.announcer.start(interfaces.collect(), vips);
    }

    /// Once a second: follow the backends' MACs, watch for VIP conflicts.
    async fn on_tick(&mut self) -> Changed {
        // The loop is alive: systemd's watchdog (WatchdogSec) restarts a daemon that stops
        // ticking, and the new one adopts the data plane.
        super::systemd::watchdog();
        if let Err(e) = refresh_neighbours(self.netlink, self.director).await {
            warn!("neighbour refresh failed: {e:#}");
        }
        self.conflicts.tick(
            &conflict_context(self.director),
            &conflict_probe(self.director),
        );
        self.log_bad_checksums();
        self.refresh_snapshot();
        false
    }

    /// Samples the counters for the rates and publishes the report for the metrics server.
    fn refresh_snapshot(&mut self) {
        match self.stats() {
            Ok(mut report) => {
                self.rates.observe(Instant::now(), &report);
                self.rates.fill(&mut report);
                self.snapshot.send_replace(Some(Arc::new(report)));
            }
            Err(e) => warn!("reading the counters failed: {e:#}"),
        }
    }

    /// Says once what is wrong when new flows arrive with unfinished checksums.
    fn log_bad_checksums(&mut self) {
        if self.bad_checksums_logged {
            return;
        }
        let Ok(count) = self.director.dataplane().event_counter(Event::BadChecksum) else {
            return;
        };
        if count.packets == 0 {
            return;
        }
        let veths: Vec<String> = self
            .director
            .interfaces()
            .iter()
            .filter(|i| i.is_veth())
            .map(|i| i.name.clone())
            .collect();
        warn!("{}", bad_checksum_advice(&veths));
        self.bad_checksums_logged = true;
    }

    fn stats(&self) -> Result<StatsReport> {
        let mut report = stats::build(self.director, self.interfaces.to_vec())?;
        report.arp_conflicts = self.conflicts.report(&conflict_context(self.director))?;
        report.flow_table = self.flow_table;
        self.rates.fill(&mut report);
        Ok(report)
    }

    /// `drlb vip activate|deactivate`: switches the director, and announces it when it becomes
    /// active (a burst of gratuitous ARP, then a repeat).
    fn failover_to(&mut self, active: bool) -> Response {
        if !active {
            self.announcer.stop();
        }
        match self.director.set_active(active) {
            Ok(effects) => {
                for effect in &effects {
                    info!("control: {effect}");
                }
                if active {
                    self.announce(self.director.vips());
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
}

async fn refresh_neighbours(netlink: &Netlink, director: &mut Controller) -> Result<()> {
    let ifindexes: Vec<u32> = director.interfaces().iter().map(|i| i.ifindex).collect();
    let macs = netlink.neighbour_macs(&ifindexes).await?;
    // Entries someone deleted (e.g. `ip neigh flush`) and those of backends added since are
    // (re)created; failed ones the kernel keeps retrying by itself, as they are managed.
    let missing: Vec<(u32, IpAddr)> = director
        .backends_needing_neighbours()
        .filter(|key| !macs.contains_key(key))
        .collect();
    for (ifindex, addr) in missing {
        netlink.keep_resolved(ifindex, addr).await?;
    }
    director.set_neighbours(macs)
}

/// What the conflict monitor needs to judge a conflict, as plain data.
fn conflict_context(controller: &Controller) -> conflict::Context {
    conflict::Context {
        active: controller.is_active(),
        backends: controller.backend_macs(),
    }
}

/// What the conflict monitor's probe sends: from each interface's MAC and first address that
/// is no VIP (a probe from a VIP would be a gratuitous ARP for it; without such an address,
/// 0.0.0.0, an ARP probe), for each VIP.
fn conflict_probe(controller: &Controller) -> conflict::Probe {
    // ARP probes: the IPv4 VIPs.
    let vips: Vec<Ipv4Addr> = controller
        .vips()
        .into_iter()
        .filter_map(|vip| match vip {
            IpAddr::V4(v4) => Some(v4),
            IpAddr::V6(_) => None,
        })
        .collect();
    conflict::Probe {
        from: controller
            .interfaces()
            .iter()
            .map(|i| conflict::ProbeFrom {
                ifindex: i.ifindex,
                mac: i.mac,
                sender_ip: i
                    .ipv4
                    .iter()
                    .map(|(a, _)| *a)
                    .find(|a| !vips.contains(a))
                    .unwrap_or(Ipv4Addr::UNSPECIFIED),
            })
            .collect(),
        vips,
        // NDP probes: the IPv6 VIPs.
        vips6: controller
            .vips()
            .into_iter()
            .filter_map(|vip| match vip {
                IpAddr::V6(v6) => Some(v6),
                IpAddr::V4(_) => None,
            })
            .collect(),
    }
}
