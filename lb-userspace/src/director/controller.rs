//! The [`Controller`]: the config in force and how each new one reaches the maps.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, SocketAddr},
};

use anyhow::{Context as _, Result, bail};
use lb_common::{SERVICE_FLAG_SOURCE_HASH, VIP_FLAG_ACTIVE, VIP_FLAG_LOCAL, Vip};
use tracing::{info, warn};

use super::{
    backends,
    health::{Health, Transition},
    layout,
    publish::{self, Built, Job},
    reconcile::{self, reconcile},
    state::{BackendState, Egress, ServiceState, service_key},
};
use crate::{
    config::{
        ActiveWhen, Config, Protocol, Scheduler, ServiceConfig, ServiceId, egress_for,
        health_check::{CheckKind, HealthCheckConfig, OnFailure},
    },
    dataplane::{AdoptedService, Dataplane, TableLayout},
    net::{
        addr::{addr_of, ip_of},
        mac::format_mac,
        netlink::{InterfaceInfo, NeighbourMacs},
    },
};

/// The change a config gaining its first IPv6 service brings when the data plane was made
/// without any (`map_sizes` gives `FLOWS6` its full size only then): it works, with a small
/// IPv6 flow table, so the operator is told how to size it.
pub const SMALL_IPV6_FLOW_TABLE: &str = "warning: the first IPv6 service of this data plane: \
     its IPv6 flow table was made small (the config it was made for had no IPv6 service), so \
     established IPv6 flows may lose their backend when backends change; to give it \
     flow_table_size, stop drlb, run `drlb down` and start it again";

/// Applies configs to the data plane: the director's interfaces, the config in force, per-service
/// state, and whether it is active.
pub struct Controller {
    interfaces: Vec<InterfaceInfo>,
    config: Config,
    services: BTreeMap<ServiceId, ServiceState>,
    neighbours: NeighbourMacs,
    dataplane: Dataplane,
    /// Answers ARP for the VIPs and forwards (else a standby: neither; see `set_active`), with
    /// `active_when = "always"`.
    active: bool,
    /// The addresses (IPv4 and IPv6) of the director's interfaces (`set_local`): VIPs among
    /// them are local (`VIP_FLAG_LOCAL`), and with `active_when = "vip-assigned"` the active
    /// ones.
    local: BTreeSet<IpAddr>,
    /// Tables of services already published are built and published later
    /// ([`Controller::defer_publishes`]), not by the change.
    deferred: bool,
    /// Services with a [`Job`] out (at most one each).
    in_flight: BTreeSet<ServiceId>,
    /// The last `ServiceState::incarnation` given.
    incarnations: u64,
}

/// What a change of the director's state did: one line per change, and the VIPs that became
/// active (to be announced).
#[derive(Debug, Default)]
pub struct Switched {
    pub effects: Vec<String>,
    pub activated: Vec<IpAddr>,
}

impl Controller {
    /// A director serving nothing yet; [`Controller::apply`] gives it its config.
    pub fn new(
        config: &Config,
        interfaces: Vec<InterfaceInfo>,
        mut dataplane: Dataplane,
    ) -> Result<Self> {
        for interface in &interfaces {
            let (ifindex, vlan) = (interface.xdp_ifindex(), interface.vlan_id());
            dataplane.set_interface(ifindex, vlan, interface.mac)?;
            dataplane.set_egress(ifindex)?;
            // Where a local sender may leave checksums unfinished (see `Event::BadChecksum`).
            if interface.is_veth() {
                dataplane.check_checksums_on(ifindex, vlan)?;
            }
        }
        let empty = Config {
            services: Vec::new(),
            ..config.clone()
        };
        Ok(Self {
            interfaces,
            config: empty,
            services: BTreeMap::new(),
            neighbours: NeighbourMacs::new(),
            dataplane,
            active: true,
            local: BTreeSet::new(),
            deferred: false,
            in_flight: BTreeSet::new(),
            incarnations: 0,
        })
    }

    /// A director that takes over the data plane an earlier drlb left running (pinned): its
    /// services, backend ids, tables and flows stay as they are, and [`Controller::apply`] then
    /// writes only what the config changes. Health starts from what the data plane shows: a
    /// backend it does not use starts down (when checked) until its probes bring it up.
    pub fn adopt(
        config: &Config,
        interfaces: Vec<InterfaceInfo>,
        mut dataplane: Dataplane,
    ) -> Result<Self> {
        let adopted = dataplane.adopt()?;
        let mut controller = Self::new(config, interfaces, dataplane)?;
        let addresses: Vec<_> = controller
            .interfaces
            .iter()
            .map(InterfaceInfo::addresses)
            .collect();
        for service in adopted {
            let (id, mut state) =
                adopted_service(config, &controller.interfaces, &addresses, service)?;
            controller.incarnations += 1;
            state.incarnation = controller.incarnations;
            controller.services.insert(id, state);
        }
        info!(
            services = controller.services.len(),
            backends = controller
                .services
                .values()
                .map(|s| s.backends.len())
                .sum::<usize>(),
            "adopted the pinned data plane: its flows, tables and counters are kept"
        );
        Ok(controller)
    }

    #[must_use]
    pub fn config(&self) -> &Config {
        &self.config
    }

    #[must_use]
    pub fn interfaces(&self) -> &[InterfaceInfo] {
        &self.interfaces
    }

    /// The VIPs of all services.
    #[must_use]
    pub fn vips(&self) -> Vec<IpAddr> {
        self.services
            .keys()
            .map(|id| id.vip)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    }

    /// Whether the director answers ARP for `vip` and forwards its traffic.
    #[must_use]
    pub fn is_vip_active(&self, vip: IpAddr) -> bool {
        match self.config.director.active_when {
            ActiveWhen::Always => self.active,
            ActiveWhen::VipAssigned => self.local.contains(&vip),
        }
    }

    /// The VIPs this director can serve, to be announced as routes (docs/bgp.md): active, and
    /// with at least one service that has a backend in its table (usable, weight above 0).
    /// A VIP with several services stays announced while any of them can serve: withdrawing
    /// it would take the others' traffic away too.
    #[must_use]
    pub fn servable_vips(&self) -> BTreeSet<IpAddr> {
        self.services
            .iter()
            .filter(|(id, _)| self.is_vip_active(id.vip))
            .filter(|(_, s)| s.backends.values().any(|b| b.usable() && b.weight > 0))
            .map(|(id, _)| id.vip)
            .collect()
    }

    /// Whether `vip` is an address of one of the director's interfaces.
    #[must_use]
    pub fn is_vip_local(&self, vip: IpAddr) -> bool {
        self.local.contains(&vip)
    }

    /// The VIPs the director is active for.
    #[must_use]
    pub fn active_vips(&self) -> Vec<IpAddr> {
        self.vips()
            .into_iter()
            .filter(|v| self.is_vip_active(*v))
            .collect()
    }

    /// Backends whose MAC must come from the neighbour table, with their egress interface.
    pub fn backends_needing_neighbours(&self) -> impl Iterator<Item = (u32, IpAddr)> + '_ {
        self.services
            .values()
            .flat_map(|s| s.backends.iter())
            .filter(|(_, b)| b.configured_mac.is_none())
            .map(|(a, b)| (b.egress.ifindex, *a))
    }

    /// What to health-check: (service, backend, check, target) for every checked backend.
    #[must_use]
    pub fn health_targets(&self) -> Vec<(ServiceId, IpAddr, HealthCheckConfig, SocketAddr)> {
        let mut targets = Vec::new();
        for (id, s) in &self.services {
            let check = s.config.health_check();
            if check.kind == CheckKind::None {
                continue;
            }
            let port = check.port.unwrap_or(s.config.port);
            for (address, _) in s.backends.iter().filter(|(_, b)| !b.leaving) {
                targets.push((
                    *id,
                    *address,
                    check.clone(),
                    SocketAddr::from((*address, port)),
                ));
            }
        }
        targets
    }

    /// Makes `new` the config in force, or changes nothing and says why not. Returns one line
    /// per change made.
    pub fn apply(&mut self, new: Config) -> Result<Vec<String>> {
        new.validate()?;
        let addresses: Vec<_> = self
            .interfaces
            .iter()
            .map(InterfaceInfo::addresses)
            .collect();
        new.validate_for_interfaces(&addresses)?;
        if new.director != self.config.director {
            bail!(
                "changing [director] (interfaces, xdp_mode, flow_table_size) needs a restart of drlb (xdp_mode and flow_table_size: `drlb down` before the start, as the pinned data plane keeps them); nothing changed"
            );
        }
        let wanted: BTreeMap<ServiceId, &ServiceConfig> =
            new.services.iter().map(|s| (s.id(), s)).collect();
        let layouts = layout::plan(
            &self.services,
            self.dataplane.maglev_capacity(),
            self.dataplane.service_capacity(),
            &|vip| self.is_vip_active(vip),
            &wanted,
        )?;
        for (id, config) in &wanted {
            backends::check_ids(self.services.get(id), config)?;
        }
        // Only now are maps written. The model changes with them, so a failed write restores
        // the model as it was and writes it back whole (see `roll_back`).
        let before = self.services.clone();
        let first_ipv6 = !self.config.services.iter().any(|s| s.vip.is_ipv6())
            && new.services.iter().any(|s| s.vip.is_ipv6());
        match self.write_change(&wanted, &layouts) {
            Ok(mut changes) => {
                self.config = new;
                if first_ipv6 && self.dataplane.ipv6_flow_table_is_small().unwrap_or(false) {
                    changes.push(SMALL_IPV6_FLOW_TABLE.to_owned());
                }
                Ok(changes)
            }
            Err(e) => Err(self.roll_back(before, e)),
        }
    }

    /// The map writes of a change `apply` has checked.
    fn write_change(
        &mut self,
        wanted: &BTreeMap<ServiceId, &ServiceConfig>,
        layouts: &BTreeMap<ServiceId, TableLayout>,
    ) -> Result<Vec<String>> {
        let mut changes = Vec::new();

        // Services that go: out of SERVICES first, so their traffic stops being forwarded
        // before their backends disappear.
        let gone: Vec<ServiceId> = self
            .services
            .keys()
            .filter(|id| !wanted.contains_key(id))
            .copied()
            .collect();
        for id in gone {
            let service = self.services.remove(&id).expect("listed above");
            self.dataplane.remove_service(&service.key, service.id)?;
            for backend in service.backends.values() {
                self.dataplane.remove_backend(service.id, backend.id)?;
                self.dataplane.release_backend(service.id, backend.id)?;
            }
            changes.push(format!("service {id} removed"));
        }
        for (id, config) in wanted {
            let layout = layouts[id];
            if !self.services.contains_key(id) {
                self.dataplane.reset_service_counter(layout.service_id)?;
                changes.push(format!("service {id} added"));
                let state = ServiceState {
                    id: layout.service_id,
                    config: (*config).clone(),
                    key: service_key(id),
                    layout,
                    backends: BTreeMap::new(),
                    table_inputs: None,
                    published_layout: None,
                    publishes: super::state::Publishes::default(),
                    incarnation: {
                        self.incarnations += 1;
                        self.incarnations
                    },
                    published_sequence: 0,
                    releasing: Vec::new(),
                };
                self.services.insert(*id, state);
            }
            let service = self.services.get_mut(id).expect("inserted above");
            backends::update(
                service,
                config,
                &self.interfaces,
                &self.neighbours,
                &mut self.dataplane,
                &mut changes,
            )?;
            if service.config.health_check() != config.health_check() {
                // A new check starts from "up", as at start-up.
                for backend in service.backends.values_mut() {
                    backend.health = Health::new();
                }
            }
            service.config = (*config).clone();
            service.layout = layout;
            if self.deferred && service.region_published() {
                // The table later (`jobs`, `finish`); removed backends leave with it.
                reconcile::stage(service, &mut self.dataplane)?;
                continue;
            }
            reconcile(service, &mut self.dataplane)?;
            for backend in service.backends.values().filter(|b| b.leaving) {
                self.dataplane.release_backend(service.id, backend.id)?;
            }
            service.backends.retain(|_, b| !b.leaving);
        }
        self.publish_vips(None)?;
        Ok(changes)
    }

    /// After a failed write: the model as it was before the change, written back to the maps
    /// whole (every service, backend, table and VIP), so maps and model agree again. Returns
    /// the error to report, saying whether the maps could be restored.
    fn roll_back(
        &mut self,
        mut before: BTreeMap<ServiceId, ServiceState>,
        error: anyhow::Error,
    ) -> anyhow::Error {
        // Tables published on the way were published: their count only grows.
        for (id, service) in &mut before {
            if let Some(now) = self.services.get(id) {
                service.publishes = now.publishes;
            }
        }
        self.services = before;
        match self.resync() {
            Ok(()) => {
                error.context("writing the change to the maps failed; rolled back, nothing changed")
            }
            Err(again) => {
                warn!("restoring the maps after a failed change failed too: {again:#}");
                error.context(format!(
                    "writing the change to the maps failed, and so did restoring them ({again:#}); \
                     the data plane may differ from `drlb stats` until the next change succeeds"
                ))
            }
        }
    }

    /// Writes the whole model to the maps, whatever they hold: every service's backends, table
    /// and flags, the VIPs; and removes what the model does not have.
    fn resync(&mut self) -> Result<()> {
        let keep: BTreeSet<u32> = self.services.values().map(|s| s.id).collect();
        for (key, id) in self.dataplane.live_services() {
            if !keep.contains(&id) {
                self.dataplane.remove_service(&key, id)?;
            }
        }
        let active: BTreeSet<IpAddr> = self.active_vips().into_iter().collect();
        for service in self.services.values_mut() {
            service.layout.flags = layout::service_flags(
                service.config.scheduler,
                active.contains(&service.config.vip),
            );
            for backend in service.backends.values_mut() {
                backend.published = None;
            }
            service.table_inputs = None;
            service.published_layout = None;
            let ids: BTreeSet<u32> = service.backends.values().map(|b| b.id).collect();
            self.dataplane.remove_backends_except(service.id, &ids)?;
            reconcile(service, &mut self.dataplane)?;
        }
        self.publish_vips(None)
    }

    /// Writes the VIPs of the services in the model with their flags (active, local), and
    /// removes the others. `only`: just the VIPs that are active (`Some(true)`) or standby.
    fn publish_vips(&mut self, only: Option<bool>) -> Result<()> {
        let wanted: BTreeSet<IpAddr> = self.vips().into_iter().collect();
        for vip in self.dataplane.vips() {
            if !wanted.contains(&vip) {
                self.dataplane.remove_vip(&addr_of(vip))?;
            }
        }
        for vip in wanted {
            let active = self.is_vip_active(vip);
            if only.is_some_and(|only| only != active) {
                continue;
            }
            // `arp = false`: a routed VIP is never answered, active or not.
            let answers_arp = active && self.config.director.arp;
            let flags = if answers_arp { VIP_FLAG_ACTIVE } else { 0 }
                | if self.is_vip_local(vip) {
                    VIP_FLAG_LOCAL
                } else {
                    0
                };
            self.dataplane.set_vip(addr_of(vip), Vip { flags })?;
        }
        Ok(())
    }

    /// Whether the director is active for any VIP (with `active_when = "always"`: whether it
    /// is active; before any service, whether it would be).
    #[must_use]
    pub fn is_active(&self) -> bool {
        match self.config.director.active_when {
            ActiveWhen::Always => self.active,
            ActiveWhen::VipAssigned => !self.active_vips().is_empty(),
        }
    }

    /// `active`, `standby`, or (`active_when = "vip-assigned"`, some VIPs held and others not)
    /// `partly active`.
    #[must_use]
    pub fn state_name(&self) -> &'static str {
        let vips = self.vips();
        let active = self.active_vips().len();
        if !self.is_active() {
            "standby"
        } else if active < vips.len() {
            "partly active"
        } else {
            "active"
        }
    }

    /// Makes the director active (it answers ARP for its VIPs and forwards their traffic) or a
    /// standby (neither: the traffic is dropped and counted as `drop_standby`). Only flags
    /// change, each with one atomic store per VIP and per service word; tables and flows stay,
    /// so an activation takes effect at once. Forwarding is switched on before ARP answers
    /// and off after them, so the director never answers ARP while unable to forward.
    /// Returns one line per change (none if the state is already `active`).
    /// The state changes only once every write succeeded; a failed write is rolled back.
    /// Refused with `active_when = "vip-assigned"`, where the VIP addresses decide.
    pub fn set_active(&mut self, active: bool) -> Result<Vec<String>> {
        if self.config.director.active_when == ActiveWhen::VipAssigned {
            bail!(
                "this director has active_when = \"vip-assigned\": it is active for a VIP while the VIP is \
                 an address of one of its interfaces (keepalived's virtual_ipaddress), so `drlb vip \
                 activate|deactivate` and --standby do not apply; add or remove the VIP address instead, \
                 or set active_when = \"always\" in [director] and restart drlb; nothing changed"
            );
        }
        if active == self.active {
            return Ok(Vec::new());
        }
        self.switch(active, self.local.clone())?;
        Ok(vec![if active {
            format!(
                "director active: answering ARP for and forwarding {} VIP(s)",
                self.vips().len()
            )
        } else {
            "director standby: no ARP answers, VIP traffic dropped (drop_standby)".to_owned()
        }])
    }

    /// Takes the addresses (IPv4 and IPv6) of the director's interfaces (at start-up and on every change
    /// the kernel reports): VIPs among them are local; with `active_when = "vip-assigned"`,
    /// the director becomes active for the VIPs that appeared and standby for those that
    /// went. Returns one line per VIP that changed and the VIPs that became active.
    pub fn set_local(&mut self, local: BTreeSet<IpAddr>) -> Result<Switched> {
        let before: Vec<(IpAddr, bool, bool)> = self.vip_states();
        self.switch(self.active, local)?;
        let mut switched = Switched::default();
        for ((vip, was_active, was_local), (_, active, local)) in
            before.into_iter().zip(self.vip_states())
        {
            if (was_active, was_local) == (active, local) {
                continue;
            }
            if active && !was_active {
                switched.activated.push(vip);
            }
            switched.effects.push(format!(
                "VIP {vip}: {}, {}",
                if active {
                    "active (ARP answered, services forwarded)"
                } else {
                    "standby (no ARP answers, service traffic dropped)"
                },
                if local {
                    "an address of this director (other traffic to it goes to the stack)"
                } else {
                    "not an address of this director"
                }
            ));
        }
        Ok(switched)
    }

    /// (VIP, active, local) of every VIP.
    #[must_use]
    pub fn vip_states(&self) -> Vec<(IpAddr, bool, bool)> {
        self.vips()
            .into_iter()
            .map(|v| (v, self.is_vip_active(v), self.is_vip_local(v)))
            .collect()
    }

    /// The director's new state, written: VIPs going standby lose their ARP answers before
    /// their forwarding, VIPs going active get forwarding before ARP answers. A failed write
    /// restores the state as it was (model and maps).
    fn switch(&mut self, active: bool, local: BTreeSet<IpAddr>) -> Result<()> {
        let old_active = std::mem::replace(&mut self.active, active);
        let old_local = std::mem::replace(&mut self.local, local);
        let before = self.services.clone();
        if let Err(e) = self.write_states() {
            self.active = old_active;
            self.local = old_local;
            return Err(self.roll_back(before, e));
        }
        Ok(())
    }

    /// The writes of `switch`: standby VIPs, then every service's flags, then active VIPs.
    fn write_states(&mut self) -> Result<()> {
        self.publish_vips(Some(false))?;
        let active: BTreeSet<IpAddr> = self.active_vips().into_iter().collect();
        for service in self.services.values_mut() {
            service.layout.flags = layout::service_flags(
                service.config.scheduler,
                active.contains(&service.config.vip),
            );
            self.dataplane
                .set_service_flags(&service.key, service.layout.flags)?;
            if let Some(published) = &mut service.published_layout {
                published.flags = service.layout.flags;
            }
        }
        self.publish_vips(Some(true))
    }

    /// (address, MAC) of every backend whose MAC is known, to name the owner of a MAC.
    #[must_use]
    pub fn backend_macs(&self) -> Vec<(IpAddr, [u8; 6])> {
        let macs: BTreeSet<(IpAddr, [u8; 6])> = self
            .services
            .values()
            .flat_map(|s| s.backends.iter())
            .filter_map(|(address, b)| Some((*address, b.mac()?)))
            .collect();
        macs.into_iter().collect()
    }

    /// Takes the neighbour table's MACs; republishes the services whose backends changed.
    pub fn set_neighbours(&mut self, macs: NeighbourMacs) -> Result<()> {
        for (id, service) in &mut self.services {
            let mut changed = false;
            for (address, backend) in &mut service.backends {
                let old = backend.mac();
                backend.neighbour_mac = macs
                    .get(&(backend.egress.ifindex, *address))
                    .copied()
                    .flatten();
                if backend.mac() != old {
                    changed = true;
                    log_mac(id, *address, backend.mac(), old);
                }
            }
            if changed {
                write_service(service, &mut self.dataplane, self.deferred)?;
            }
        }
        self.neighbours = macs;
        Ok(())
    }

    /// Logs every backend whose MAC is unknown (at start-up, when nothing changed yet).
    pub fn report_unresolved(&self) {
        for (id, service) in &self.services {
            for (address, backend) in &service.backends {
                if backend.mac().is_none() {
                    log_mac(id, *address, None, None);
                }
            }
        }
    }

    /// Records a health probe result; republishes the service when the backend goes up or down.
    pub fn record_health(
        &mut self,
        id: ServiceId,
        address: IpAddr,
        result: &Result<()>,
    ) -> Result<()> {
        let Some(service) = self.services.get_mut(&id) else {
            return Ok(());
        };
        let check = service.config.health_check();
        let Some(backend) = service.backends.get_mut(&address) else {
            return Ok(());
        };
        match backend
            .health
            .record(result.is_ok(), check.rise, check.fall)
        {
            None => return Ok(()),
            Some(Transition::Down) => {
                let why = result
                    .as_ref()
                    .err()
                    .map(|e| format!("{e:#}"))
                    .unwrap_or_default();
                if check.on_failure == OnFailure::Drain {
                    warn!(service = %id, backend = %address, reason = %why, "backend DOWN: out of the table, its established flows continue (on_failure = drain)");
                } else {
                    warn!(service = %id, backend = %address, reason = %why, "backend DOWN: out of the table, its flows move");
                }
            }
            Some(Transition::Up) => {
                info!(service = %id, backend = %address, "backend UP: back in the table")
            }
        }
        write_service(service, &mut self.dataplane, self.deferred)
    }

    /// From now on, a change (`apply`, a health transition, a MAC) writes the model and the
    /// `BACKENDS` words at once and leaves the table of a published service to [`Job`]s: ask
    /// for them with [`Controller::jobs`], run them elsewhere ([`publish::Builder`]), hand
    /// the results to [`Controller::finish`]. New services, resized tables and removals of
    /// services are still written by the change itself.
    pub fn defer_publishes(&mut self) {
        self.deferred = true;
    }

    /// The jobs due: for each service without one out, its table if the live one differs
    /// from the model's, or a grace period if removed backends wait for one to free their
    /// ids. A service whose table cannot wait for a build (its region is not live) is
    /// written here and now.
    pub fn jobs(&mut self) -> Result<Vec<Job>> {
        let mut jobs = Vec::new();
        for (id, service) in &mut self.services {
            if self.in_flight.contains(id) {
                continue;
            }
            retire_leaving(service, &self.dataplane);
            if !service.region_published() {
                // A publish that failed before the region was live: again, now.
                reconcile(service, &mut self.dataplane)?;
                continue;
            }
            let table = service.needs_publish();
            if !table && service.releasing.is_empty() {
                continue;
            }
            let grace = (!service.releasing.is_empty()
                || self.dataplane.publish_needs_grace(service.layout))
            .then(|| self.dataplane.grace_token());
            jobs.push(Job {
                service: *id,
                incarnation: service.incarnation,
                size: service.layout.size,
                inputs: table.then(|| service.wanted_inputs()),
                grace,
                sequence: publish::next_sequence(),
            });
            self.in_flight.insert(*id);
        }
        Ok(jobs)
    }

    /// Takes a finished [`Job`]: the grace period it waited for frees what was pending
    /// before it; its table is published if it is still the newest for the service and names
    /// only backends the model still has; then the `BACKENDS` words of backends that table
    /// no longer names are cleared. A failed write leaves the service needing a publish, so
    /// the next [`Controller::jobs`] asks for it again: the model keeps the accepted state
    /// and the maps catch up, never the other way round.
    pub fn finish(&mut self, built: Built) -> Result<()> {
        let job = built.job;
        self.in_flight.remove(&job.service);
        if let Some(token) = job.grace {
            self.dataplane.grace_passed(token);
        }
        let Some(service) = self.services.get_mut(&job.service) else {
            return Ok(());
        };
        if service.incarnation != job.incarnation {
            return Ok(());
        }
        if let Some(token) = job.grace {
            let mut kept = Vec::new();
            for (backend_id, since) in std::mem::take(&mut service.releasing) {
                if since.precedes(token) {
                    if let Err(e) = self.dataplane.release_backend(service.id, backend_id) {
                        service.releasing.push((backend_id, since));
                        return Err(e);
                    }
                } else {
                    kept.push((backend_id, since));
                }
            }
            service.releasing.extend(kept);
        }
        if let (Some(inputs), Some(table)) = (job.inputs, built.table) {
            let current = job.sequence > service.published_sequence
                && service.region_published()
                && service.layout.size == job.size
                && inputs.iter().all(|(address, _, backend_id)| {
                    service
                        .backends
                        .get(address)
                        .is_some_and(|b| b.id == *backend_id && b.published.is_some())
                });
            if current {
                reconcile::publish(
                    service,
                    &mut self.dataplane,
                    inputs,
                    &table,
                    job.sequence,
                    built.started,
                )?;
            }
        }
        if let Err(e) = reconcile::clear_unused(service, &mut self.dataplane) {
            // Published again (the same table: nothing written) and cleared next time.
            service.table_inputs = None;
            return Err(e);
        }
        retire_leaving(service, &self.dataplane);
        Ok(())
    }

    /// A mark for every change made so far: [`Controller::is_live`] says when they all are
    /// in the data plane.
    #[must_use]
    pub fn change_mark(&self) -> u64 {
        publish::next_sequence()
    }

    /// Whether every change made before `mark` ([`Controller::change_mark`]) is live: each
    /// service's live table is the model's, or was built after the mark.
    #[must_use]
    pub fn is_live(&self, mark: u64) -> bool {
        self.services
            .values()
            .all(|s| s.published_sequence > mark || !s.needs_publish())
    }

    /// Services whose table differs from the model's or that wait for a grace period (for
    /// reports and the benchmark): 0 once every change is visible to the data plane.
    #[must_use]
    pub fn unpublished(&self) -> usize {
        self.services
            .values()
            .filter(|s| s.needs_publish() || !s.releasing.is_empty())
            .count()
    }

    /// Publishes every table that differs from the model's and frees what waits for a grace
    /// period, here and now (before the daemon stops; jobs still out are then ignored).
    pub fn publish_now(&mut self) -> Result<()> {
        for service in self.services.values_mut() {
            reconcile(service, &mut self.dataplane)?;
            retire_leaving(service, &self.dataplane);
            // Tables built before this are older than what was just published.
            service.published_sequence = publish::next_sequence();
        }
        if self.services.values().any(|s| !s.releasing.is_empty()) {
            let token = self.dataplane.grace_token();
            crate::dataplane::grace::wait();
            self.dataplane.grace_passed(token);
            for service in self.services.values_mut() {
                while let Some((backend_id, since)) = service.releasing.pop() {
                    if let Err(e) = self.dataplane.release_backend(service.id, backend_id) {
                        service.releasing.push((backend_id, since));
                        return Err(e);
                    }
                }
            }
        }
        Ok(())
    }
}

impl Controller {
    /// The services and what is tracked for each, for reports.
    pub fn services(&self) -> impl Iterator<Item = (&ServiceId, &ServiceState)> {
        self.services.iter()
    }

    /// The data plane, for reading counters.
    #[must_use]
    pub fn dataplane(&self) -> &Dataplane {
        &self.dataplane
    }

    /// The data plane, for tests that make its writes fail (`Dataplane::fail_write_after`).
    #[doc(hidden)]
    pub fn dataplane_mut(&mut self) -> &mut Dataplane {
        &mut self.dataplane
    }
}

/// The model of a service found in an adopted data plane. Its settings are the config's when
/// the config has it (what `apply` then changes is what differs in the maps); one the config
/// dropped gets what the maps tell, enough to remove it.
fn adopted_service(
    config: &Config,
    interfaces: &[InterfaceInfo],
    addresses: &[crate::config::InterfaceAddresses],
    adopted: AdoptedService,
) -> Result<(ServiceId, ServiceState)> {
    let vip = ip_of(adopted.key.addr);
    let protocol = Protocol::from_number(adopted.key.protocol)
        .context("an adopted service has a protocol drlb does not balance")?;
    let id = ServiceId {
        protocol,
        vip,
        port: u16::from_be(adopted.key.port_be),
    };
    let service_config = config
        .services
        .iter()
        .find(|s| s.id() == id)
        .cloned()
        .unwrap_or_else(|| ServiceConfig {
            vip,
            port: id.port,
            protocol,
            scheduler: if adopted.layout.flags & u32::from(SERVICE_FLAG_SOURCE_HASH) != 0 {
                Scheduler::SourceHash
            } else {
                Scheduler::Maglev
            },
            table_size: adopted.layout.size,
            health_check: None,
            backends: Vec::new(),
        });
    let checked = service_config.health_check().kind != CheckKind::None;
    let mut backends = BTreeMap::new();
    for backend in adopted.backends {
        let address = ip_of(backend.address);
        let configured = service_config
            .backends
            .iter()
            .find(|b| b.address == address);
        let egress = configured
            .and_then(|b| egress_for(b, addresses))
            .and_then(|a| interfaces.iter().find(|i| i.name == a.name))
            .map(Egress::of)
            .or_else(|| {
                backend.published.map(|p| {
                    interfaces
                        .iter()
                        .find(|i| (i.xdp_ifindex(), i.vlan_id()) == (p.ifindex, p.vlan))
                        .map_or(
                            Egress {
                                ifindex: p.ifindex,
                                mac: p.src_mac,
                                xdp_ifindex: p.ifindex,
                                vlan: p.vlan,
                            },
                            Egress::of,
                        )
                })
            })
            .or_else(|| interfaces.first().map(Egress::of))
            .context("a director without interfaces")?;
        let configured_mac = configured.and_then(|b| b.mac).map(|m| m.into_array());
        // One id per address; should the records name an address twice (an id claimed by a
        // change that failed), the one the data plane uses wins.
        if backends
            .get(&address)
            .is_some_and(|b: &BackendState| b.published.is_some() || backend.published.is_none())
        {
            continue;
        }
        backends.insert(
            address,
            BackendState {
                id: backend.id,
                egress,
                weight: configured.map_or(1, |b| b.weight),
                configured_mac,
                // What the data plane sends to, until the neighbour table says otherwise.
                neighbour_mac: backend.published.map(|p| p.dst_mac),
                // Up if the data plane used it: in BACKENDS, and in the live table unless it is
                // drained (a backend that failed its checks with on_failure = "drain" stays in
                // BACKENDS, out of the table). Else down until its probes bring it up.
                health: if !checked
                    || (backend.published.is_some()
                        && (backend.in_table || configured.is_none_or(|b| b.weight == 0)))
                {
                    Health::new()
                } else {
                    Health::down()
                },
                leaving: false,
                published: backend.published,
            },
        );
    }
    let state = ServiceState {
        id: adopted.layout.service_id,
        config: service_config,
        key: adopted.key,
        layout: adopted.layout,
        backends,
        // Unknown: the next reconcile builds the table and writes it only if it differs.
        table_inputs: None,
        published_layout: Some(adopted.layout),
        // Counted by this process: a restart starts the count again (a counter reset).
        publishes: super::state::Publishes::default(),
        incarnation: 0,
        published_sequence: 0,
        releasing: Vec::new(),
    };
    Ok((id, state))
}

fn log_mac(id: &ServiceId, address: IpAddr, new: Option<[u8; 6]>, old: Option<[u8; 6]>) {
    match new {
        Some(mac) => {
            info!(service = %id, backend = %address, mac = %format_mac(mac), "backend MAC known")
        }
        None if old.is_some() => {
            warn!(service = %id, backend = %address, "backend MAC lost (no ARP answer): left out until it resolves")
        }
        None => {
            warn!(service = %id, backend = %address, "backend MAC unknown (no ARP answer yet): left out until it resolves")
        }
    }
}

/// A service's state written: at once, or (`deferred`, its region live) only its `BACKENDS`
/// words, its table left to a [`Job`].
fn write_service(
    service: &mut ServiceState,
    dataplane: &mut Dataplane,
    deferred: bool,
) -> Result<()> {
    if deferred && service.region_published() {
        reconcile::stage(service, dataplane)
    } else {
        reconcile(service, dataplane)
    }
}

/// Removed backends whose `BACKENDS` word is cleared (no live table names them) leave the
/// model; their ids are freed after the next grace period.
fn retire_leaving(service: &mut ServiceState, dataplane: &Dataplane) {
    let token = dataplane.grace_token();
    let gone: Vec<IpAddr> = service
        .backends
        .iter()
        .filter(|(_, b)| b.leaving && b.published.is_none())
        .map(|(a, _)| *a)
        .collect();
    for address in gone {
        if let Some(backend) = service.backends.remove(&address) {
            service.releasing.push((backend.id, token));
        }
    }
}
