//! The [`Controller`]: the config in force and how each new one reaches the maps.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{Ipv4Addr, SocketAddr},
};

use anyhow::{Result, bail};
use lb_common::{VIP_FLAG_ACTIVE, Vip, ipv4_mapped};
use tracing::{info, warn};

use super::{
    backends,
    health::{Health, Transition},
    layout,
    reconcile::reconcile,
    state::{ServiceState, service_key},
};
use crate::{
    config::{
        Config, ServiceConfig, ServiceId,
        health_check::{CheckKind, HealthCheckConfig},
    },
    dataplane::{Dataplane, TableLayout},
    net::{
        mac::format_mac,
        netlink::{InterfaceInfo, NeighbourMacs},
    },
};

/// Applies configs to the data plane: the director's interfaces, the config in force, per-service
/// state, and whether it is active.
pub struct Controller {
    interfaces: Vec<InterfaceInfo>,
    config: Config,
    services: BTreeMap<ServiceId, ServiceState>,
    neighbours: NeighbourMacs,
    dataplane: Dataplane,
    /// Answers ARP for the VIPs and forwards (else a standby: neither; see `set_active`).
    active: bool,
}

impl Controller {
    /// A director serving nothing yet; [`Controller::apply`] gives it its config.
    pub fn new(
        config: &Config,
        interfaces: Vec<InterfaceInfo>,
        mut dataplane: Dataplane,
    ) -> Result<Self> {
        for interface in &interfaces {
            dataplane.set_interface(interface.ifindex, interface.mac)?;
            dataplane.set_egress(interface.ifindex)?;
            // Where a local sender may leave checksums unfinished (see `Event::BadChecksum`).
            if interface.is_veth() {
                dataplane.check_checksums_on(interface.ifindex)?;
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
        })
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
    pub fn vips(&self) -> Vec<Ipv4Addr> {
        self.services
            .keys()
            .map(|id| id.vip)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    }

    /// Backends whose MAC must come from the neighbour table, with their egress interface.
    pub fn backends_needing_neighbours(&self) -> impl Iterator<Item = (u32, Ipv4Addr)> + '_ {
        self.services
            .values()
            .flat_map(|s| s.backends.iter())
            .filter(|(_, b)| b.configured_mac.is_none())
            .map(|(a, b)| (b.egress.ifindex, *a))
    }

    /// What to health-check: (service, backend, check, target) for every checked backend.
    #[must_use]
    pub fn health_targets(&self) -> Vec<(ServiceId, Ipv4Addr, HealthCheckConfig, SocketAddr)> {
        let mut targets = Vec::new();
        for (id, s) in &self.services {
            let check = s.config.health_check();
            if check.kind == CheckKind::None {
                continue;
            }
            let port = check.port.unwrap_or(s.config.port);
            for address in s.backends.keys() {
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
                "changing [director] (interfaces, xdp_mode, flow_table_size) needs a restart of drlb; nothing changed"
            );
        }
        let wanted: BTreeMap<ServiceId, &ServiceConfig> =
            new.services.iter().map(|s| (s.id(), s)).collect();
        let layouts = layout::plan(
            &self.services,
            self.dataplane.maglev_capacity(),
            self.dataplane.service_capacity(),
            self.active,
            &wanted,
        )?;
        for (id, config) in &wanted {
            backends::check_ids(self.services.get(id), config)?;
        }
        // Only now are maps written. The model changes with them, so a failed write restores
        // the model as it was and writes it back whole (see `roll_back`).
        let before = self.services.clone();
        match self.write_change(&wanted, &layouts) {
            Ok(changes) => {
                self.config = new;
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
            reconcile(service, &mut self.dataplane)?;
            service.backends.retain(|_, b| !b.leaving);
        }
        self.publish_vips(self.active)?;
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
        for service in self.services.values_mut() {
            service.layout.flags = layout::service_flags(service.config.scheduler, self.active);
            for backend in service.backends.values_mut() {
                backend.published = None;
            }
            service.table_inputs = None;
            service.published_layout = None;
            let ids: BTreeSet<u32> = service.backends.values().map(|b| b.id).collect();
            self.dataplane.remove_backends_except(service.id, &ids)?;
            reconcile(service, &mut self.dataplane)?;
        }
        self.publish_vips(self.active)
    }

    /// Writes the VIPs of the services in the model, with the flags of `active`, and removes
    /// the others.
    fn publish_vips(&mut self, active: bool) -> Result<()> {
        let wanted: BTreeSet<Ipv4Addr> = self.vips().into_iter().collect();
        for vip in self.dataplane.vips() {
            if !wanted.contains(&vip) {
                self.dataplane.remove_vip(&ipv4_mapped(vip.octets()))?;
            }
        }
        let flags = if active { VIP_FLAG_ACTIVE } else { 0 };
        for vip in wanted {
            self.dataplane
                .set_vip(ipv4_mapped(vip.octets()), Vip { flags })?;
        }
        Ok(())
    }

    #[must_use]
    pub fn is_active(&self) -> bool {
        self.active
    }

    /// Makes the director active (it answers ARP for its VIPs and forwards their traffic) or a
    /// standby (neither: the traffic is dropped and counted as `drop_standby`). Only flags
    /// change, each with one atomic store per VIP and per service word; tables and flows stay,
    /// so an activation takes effect at once. Forwarding is switched on before ARP answers
    /// and off after them, so the director never answers ARP while unable to forward.
    /// Returns one line per change (none if the state is already `active`).
    /// The state changes only once every write succeeded; a failed write is rolled back.
    pub fn set_active(&mut self, active: bool) -> Result<Vec<String>> {
        if active == self.active {
            return Ok(Vec::new());
        }
        let before = self.services.clone();
        if let Err(e) = self.write_active(active) {
            return Err(self.roll_back(before, e));
        }
        self.active = active;
        Ok(vec![if active {
            format!(
                "director active: answering ARP for and forwarding {} VIP(s)",
                self.vips().len()
            )
        } else {
            "director standby: no ARP answers, VIP traffic dropped (drop_standby)".to_owned()
        }])
    }

    /// The writes of `set_active`: forwarding on before ARP answers, off after them.
    fn write_active(&mut self, active: bool) -> Result<()> {
        if !active {
            self.publish_vips(active)?;
        }
        for service in self.services.values_mut() {
            service.layout.flags = layout::service_flags(service.config.scheduler, active);
            self.dataplane
                .set_service_flags(&service.key, service.layout.flags)?;
            if let Some(published) = &mut service.published_layout {
                published.flags = service.layout.flags;
            }
        }
        if active {
            self.publish_vips(active)?;
        }
        Ok(())
    }

    /// (address, MAC) of every backend whose MAC is known, to name the owner of a MAC.
    #[must_use]
    pub fn backend_macs(&self) -> Vec<(Ipv4Addr, [u8; 6])> {
        let macs: BTreeSet<(Ipv4Addr, [u8; 6])> = self
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
                reconcile(service, &mut self.dataplane)?;
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
        address: Ipv4Addr,
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
                warn!(service = %id, backend = %address, reason = %why, "backend DOWN: out of the table, its flows move");
            }
            Some(Transition::Up) => {
                info!(service = %id, backend = %address, "backend UP: back in the table")
            }
        }
        reconcile(service, &mut self.dataplane)
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

fn log_mac(id: &ServiceId, address: Ipv4Addr, new: Option<[u8; 6]>, old: Option<[u8; 6]>) {
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
