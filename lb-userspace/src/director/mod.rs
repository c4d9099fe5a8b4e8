//! The daemon's model of the director: the services and backends it should serve, what it
//! knows about each backend (MAC, health), and how that becomes map contents.
//!
//! Every change, from the config file (start, SIGHUP) or from the CLI, is a new [`Config`]
//! given to [`Director::apply`]: it is validated and checked for room first, and refused whole
//! if anything is wrong, so no change is ever half-applied. Within a service, [`reconcile`]
//! orders the map writes so the program never follows a dangling reference: backends are added
//! before the table that names them, and removed after the table that stopped naming them.

pub mod maglev;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{Ipv4Addr, SocketAddr},
};

use anyhow::{Context as _, Result, bail};
use lb_common::{
    Backend, DEFAULT_MAGLEV_ENTRIES, DEFAULT_TABLE_SIZE, MAX_SERVICES, SERVICE_FLAG_SOURCE_HASH,
    SERVICE_FLAG_STANDBY, ServiceKey, TABLE_BANKS, VIP_FLAG_ACTIVE, Verdict, Vip, ipv4_mapped,
};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use self::maglev::WeightedBackend;
use crate::{
    config::{BackendConfig, Config, Scheduler, ServiceConfig, ServiceId, egress_for},
    daemon::health::{CheckKind, Health, HealthCheckConfig, Transition},
    dataplane::loader::MapSizes,
    dataplane::{Dataplane, TableLayout},
    net::netlink::{InterfaceInfo, NeighbourMacs},
    report::stats::{BackendStats, Count, InterfaceStats, ServiceStats, StatsReport, format_mac},
};

/// The map sizes a config needs: room for its services' tables plus default-sized tables for
/// services that may be added at run time.
#[must_use]
pub fn map_sizes(config: &Config) -> MapSizes {
    let configured: u64 = config
        .services
        .iter()
        .map(|s| u64::from(TABLE_BANKS) * u64::from(s.table_size))
        .sum();
    let spare = u64::from(MAX_SERVICES).saturating_sub(config.services.len() as u64)
        * u64::from(TABLE_BANKS)
        * u64::from(DEFAULT_TABLE_SIZE);
    let maglev_entries = u32::try_from((configured + spare).max(u64::from(DEFAULT_MAGLEV_ENTRIES)))
        .unwrap_or(u32::MAX);
    MapSizes {
        maglev_entries,
        flow_table_size: config.director.flow_table_size,
    }
}

/// A change requested at run time (`drlb service|backend ...`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "kebab-case")]
pub enum Change {
    ServiceAdd {
        service: ServiceConfig,
    },
    ServiceRemove {
        service: ServiceId,
    },
    BackendAdd {
        service: ServiceId,
        backend: BackendConfig,
    },
    BackendRemove {
        service: ServiceId,
        address: Ipv4Addr,
    },
    BackendSetWeight {
        service: ServiceId,
        address: Ipv4Addr,
        weight: u32,
    },
}

impl Change {
    /// The config with this change made; an error if it names what is not there (or adds what
    /// is). The result still has to pass validation.
    pub fn edit(&self, config: &Config) -> Result<Config> {
        let mut config = config.clone();
        match self {
            Self::ServiceAdd { service } => {
                if config.services.iter().any(|s| s.id() == service.id()) {
                    bail!("service {} exists already", service.id());
                }
                config.services.push(service.clone());
            }
            Self::ServiceRemove { service } => {
                let before = config.services.len();
                config.services.retain(|s| s.id() != *service);
                if config.services.len() == before {
                    bail!("there is no service {service}");
                }
            }
            Self::BackendAdd { service, backend } => {
                let s = find_service(&mut config, service)?;
                if s.backends.iter().any(|b| b.address == backend.address) {
                    bail!("service {service} has backend {} already", backend.address);
                }
                s.backends.push(backend.clone());
            }
            Self::BackendRemove { service, address } => {
                let s = find_service(&mut config, service)?;
                let before = s.backends.len();
                s.backends.retain(|b| b.address != *address);
                if s.backends.len() == before {
                    bail!("service {service} has no backend {address}");
                }
            }
            Self::BackendSetWeight {
                service,
                address,
                weight,
            } => {
                let s = find_service(&mut config, service)?;
                let b = s
                    .backends
                    .iter_mut()
                    .find(|b| b.address == *address)
                    .with_context(|| format!("service {service} has no backend {address}"))?;
                b.weight = *weight;
            }
        }
        Ok(config)
    }
}

fn find_service<'a>(config: &'a mut Config, id: &ServiceId) -> Result<&'a mut ServiceConfig> {
    config
        .services
        .iter_mut()
        .find(|s| s.id() == *id)
        .with_context(|| format!("there is no service {id}"))
}

/// The interface a backend's frames leave by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Egress {
    ifindex: u32,
    mac: [u8; 6],
}

/// A backend as the daemon tracks it.
#[derive(Clone, Debug)]
struct BackendState {
    id: u32,
    egress: Egress,
    weight: u32,
    configured_mac: Option<[u8; 6]>,
    neighbour_mac: Option<[u8; 6]>,
    health: Health,
    /// Being removed: out of the table, then out of BACKENDS.
    leaving: bool,
    /// What BACKENDS holds for it.
    published: Option<Backend>,
}

impl BackendState {
    fn mac(&self) -> Option<[u8; 6]> {
        self.configured_mac.or(self.neighbour_mac)
    }

    /// May receive traffic: known MAC, healthy, not leaving. (A drained backend is usable:
    /// its established flows continue.)
    fn usable(&self) -> bool {
        !self.leaving && self.health.is_up() && self.mac().is_some()
    }

    fn state(&self) -> &'static str {
        if !self.health.is_up() {
            "down"
        } else if self.mac().is_none() {
            "no-mac"
        } else if self.weight == 0 {
            "drained"
        } else {
            "active"
        }
    }
}

#[derive(Clone, Debug)]
struct ServiceState {
    id: u32,
    config: ServiceConfig,
    key: ServiceKey,
    layout: TableLayout,
    backends: BTreeMap<Ipv4Addr, BackendState>,
    /// The (address, weight, id) list the live table was built from.
    table_inputs: Option<Vec<(Ipv4Addr, u32, u32)>>,
    published_layout: Option<TableLayout>,
}

/// The director: its interfaces, the config in force, and per-service state.
pub struct Director {
    interfaces: Vec<InterfaceInfo>,
    config: Config,
    services: BTreeMap<ServiceId, ServiceState>,
    neighbours: NeighbourMacs,
    dataplane: Dataplane,
    /// Answers ARP for the VIPs and forwards (else a standby: neither; see `set_active`).
    active: bool,
}

impl Director {
    /// A director serving nothing yet; [`Director::apply`] gives it its config.
    pub fn new(
        config: &Config,
        interfaces: Vec<InterfaceInfo>,
        mut dataplane: Dataplane,
    ) -> Result<Self> {
        for interface in &interfaces {
            dataplane.set_interface(interface.ifindex, interface.mac)?;
            dataplane.set_egress(interface.ifindex)?;
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
        let layouts = self.plan_layouts(&wanted)?;
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
        for (id, config) in &wanted {
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
                };
                self.services.insert(*id, state);
            }
            let service = self.services.get_mut(id).expect("inserted above");
            update_backends(
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
        self.publish_vips()?;
        self.config = new;
        Ok(changes)
    }

    /// Assigns each wanted service an id and a table region, keeping those of services that
    /// stay (unless their table size changes). Fails, before anything changed, when the
    /// `MAGLEV` array has no room.
    fn plan_layouts(
        &self,
        wanted: &BTreeMap<ServiceId, &ServiceConfig>,
    ) -> Result<BTreeMap<ServiceId, TableLayout>> {
        let mut used_ids: BTreeSet<u32> = BTreeSet::new();
        let mut regions: Vec<(u32, u32)> = Vec::new();
        let mut layouts = BTreeMap::new();
        // Regions of every current service stay reserved until the change is complete (a
        // resized table is written next to its old one).
        for service in self.services.values() {
            regions.push((service.layout.base, TABLE_BANKS * service.layout.size));
        }
        for (id, config) in wanted {
            if let Some(current) = self.services.get(id) {
                used_ids.insert(current.id);
                if current.layout.size == config.table_size {
                    layouts.insert(
                        *id,
                        TableLayout {
                            flags: self.service_flags(config.scheduler),
                            ..current.layout
                        },
                    );
                }
            }
        }
        for (id, config) in wanted {
            if layouts.contains_key(id) {
                continue;
            }
            let service_id = match self.services.get(id) {
                Some(current) => current.id,
                None => {
                    let free = (0..MAX_SERVICES)
                        .find(|i| !used_ids.contains(i))
                        .context("no free service id")?;
                    used_ids.insert(free);
                    free
                }
            };
            let len = TABLE_BANKS * config.table_size;
            let base = first_fit(&regions, len, self.dataplane.maglev_capacity()).with_context(|| {
                format!(
                    "no room for the table of service {id} ({len} entries) in the Maglev table memory ({} entries): \
                     restart drlb to size it for the new config; nothing changed",
                    self.dataplane.maglev_capacity()
                )
            })?;
            regions.push((base, len));
            layouts.insert(
                *id,
                TableLayout {
                    service_id,
                    base,
                    size: config.table_size,
                    flags: self.service_flags(config.scheduler),
                },
            );
        }
        Ok(layouts)
    }

    fn publish_vips(&mut self) -> Result<()> {
        let wanted: BTreeSet<Ipv4Addr> = self.vips().into_iter().collect();
        for vip in self
            .config
            .services
            .iter()
            .map(|s| s.vip)
            .filter(|v| !wanted.contains(v))
        {
            self.dataplane.remove_vip(&ipv4_mapped(vip.octets()))?;
        }
        let flags = if self.active { VIP_FLAG_ACTIVE } else { 0 };
        for vip in wanted {
            self.dataplane
                .set_vip(ipv4_mapped(vip.octets()), Vip { flags })?;
        }
        Ok(())
    }

    /// The `Service` flags of a service: its scheduler's, and `SERVICE_FLAG_STANDBY` while this
    /// director is a standby.
    fn service_flags(&self, scheduler: Scheduler) -> u32 {
        scheduler_flags(scheduler) | if self.active { 0 } else { SERVICE_FLAG_STANDBY }
    }

    #[must_use]
    pub fn is_active(&self) -> bool {
        self.active
    }

    /// Makes the director active (it answers ARP for its VIPs and forwards their traffic) or a
    /// standby (neither: the traffic is dropped and counted as `drop_standby`). Only flags
    /// change, each with one atomic map update per VIP and per service; tables and flows stay,
    /// so an activation takes effect at once. Forwarding is switched on before ARP answers
    /// and off after them, so the director never answers ARP while unable to forward.
    /// Returns one line per change (none if the state is already `active`).
    pub fn set_active(&mut self, active: bool) -> Result<Vec<String>> {
        if active == self.active {
            return Ok(Vec::new());
        }
        self.active = active;
        if !active {
            self.publish_vips()?;
        }
        for service in self.services.values_mut() {
            service.layout.flags = scheduler_flags(service.config.scheduler)
                | if active { 0 } else { SERVICE_FLAG_STANDBY };
            self.dataplane
                .set_service_flags(&service.key, service.layout.flags)?;
            if let Some(published) = &mut service.published_layout {
                published.flags = service.layout.flags;
            }
        }
        if active {
            self.publish_vips()?;
        }
        Ok(vec![if active {
            format!(
                "director active: answering ARP for and forwarding {} VIP(s)",
                self.vips().len()
            )
        } else {
            "director standby: no ARP answers, VIP traffic dropped (drop_standby)".to_owned()
        }])
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

    /// The counters and states; `interfaces` says how the program is attached to each.
    pub fn stats(&self, interfaces: Vec<InterfaceStats>) -> Result<StatsReport> {
        let mut services = Vec::new();
        for (id, s) in &self.services {
            let total = self.dataplane.service_counter(s.id)?;
            let checked = s.config.health_check().kind != CheckKind::None;
            let mut backends = Vec::new();
            for (address, b) in &s.backends {
                let count = self.dataplane.backend_counter(s.id, b.id)?;
                backends.push(BackendStats {
                    address: address.to_string(),
                    interface: self
                        .interfaces
                        .iter()
                        .find(|i| i.ifindex == b.egress.ifindex)
                        .map_or_else(String::new, |i| i.name.clone()),
                    weight: b.weight,
                    mac: b.mac().map(format_mac),
                    state: b.state().to_owned(),
                    health: if !checked {
                        "unchecked"
                    } else if b.health.is_up() {
                        "up"
                    } else {
                        "down"
                    }
                    .to_owned(),
                    packets: count.packets,
                    bytes: count.bytes,
                });
            }
            services.push(ServiceStats {
                vip: id.vip.to_string(),
                port: id.port,
                protocol: id.protocol.to_string(),
                scheduler: match s.config.scheduler {
                    Scheduler::Maglev => "maglev",
                    Scheduler::SourceHash => "source-hash",
                }
                .to_owned(),
                packets: total.packets,
                bytes: total.bytes,
                backends,
            });
        }
        let mut verdicts = BTreeMap::new();
        for verdict in Verdict::ALL {
            verdicts.insert(
                verdict.name().to_owned(),
                Count::from(self.dataplane.verdict_counter(verdict)?),
            );
        }
        Ok(StatsReport {
            interfaces,
            services,
            verdicts,
            state: if self.active { "active" } else { "standby" }.to_owned(),
            arp_conflicts: Vec::new(),
        })
    }
}

/// Brings a service's backend states in line with its config: new backends get the lowest
/// free id (and fresh counters), removed ones are marked leaving, weights and MACs follow.
fn update_backends(
    service: &mut ServiceState,
    config: &ServiceConfig,
    interfaces: &[InterfaceInfo],
    neighbours: &NeighbourMacs,
    dataplane: &mut Dataplane,
    changes: &mut Vec<String>,
) -> Result<()> {
    let name = config.id();
    let wanted: BTreeMap<Ipv4Addr, &BackendConfig> =
        config.backends.iter().map(|b| (b.address, b)).collect();
    for (address, backend) in &mut service.backends {
        if !wanted.contains_key(address) {
            backend.leaving = true;
            changes.push(format!("service {name}: backend {address} removed"));
        }
    }
    let addresses: Vec<_> = interfaces.iter().map(InterfaceInfo::addresses).collect();
    for (address, wanted) in &wanted {
        let configured_mac = wanted.mac.map(|m| m.into_array());
        // Validation made sure every backend has one.
        let egress = egress_for(wanted, &addresses)
            .and_then(|a| interfaces.iter().find(|i| i.name == a.name))
            .map(|i| Egress {
                ifindex: i.ifindex,
                mac: i.mac,
            })
            .context("a backend without an egress interface passed validation")?;
        if let Some(backend) = service.backends.get_mut(address) {
            if backend.egress != egress {
                changes.push(format!(
                    "service {name}: backend {address} moves to interface {}",
                    egress.ifindex
                ));
                backend.egress = egress;
                backend.neighbour_mac = neighbours
                    .get(&(egress.ifindex, *address))
                    .copied()
                    .flatten();
            }
            if backend.weight != wanted.weight {
                changes.push(format!(
                    "service {name}: backend {address} weight {} -> {}",
                    backend.weight, wanted.weight
                ));
                backend.weight = wanted.weight;
            }
            backend.configured_mac = configured_mac;
            continue;
        }
        let used: BTreeSet<u32> = service.backends.values().map(|b| b.id).collect();
        let id = (0..)
            .find(|i| !used.contains(i))
            .expect("fewer backends than ids");
        dataplane.reset_backend_counter(service.id, id)?;
        service.backends.insert(
            *address,
            BackendState {
                id,
                egress,
                weight: wanted.weight,
                configured_mac,
                neighbour_mac: neighbours
                    .get(&(egress.ifindex, *address))
                    .copied()
                    .flatten(),
                health: Health::new(),
                leaving: false,
                published: None,
            },
        );
        changes.push(format!(
            "service {name}: backend {address} added (weight {})",
            wanted.weight
        ));
    }
    Ok(())
}

/// Writes a service's state to the maps, in the order that keeps every reference valid:
/// backends it may use, then its table, then the removal of backends it may no longer use.
fn reconcile(service: &mut ServiceState, dataplane: &mut Dataplane) -> Result<()> {
    for backend in service.backends.values_mut() {
        let wanted = backend.usable().then(|| Backend {
            dst_mac: backend.mac().expect("usable backends have a MAC"),
            src_mac: backend.egress.mac,
            ifindex: backend.egress.ifindex,
        });
        if let Some(entry) = wanted.filter(|w| Some(*w) != backend.published) {
            dataplane.set_backend(service.id, backend.id, &entry)?;
            backend.published = Some(entry);
        }
    }
    let inputs: Vec<(Ipv4Addr, u32, u32)> = service
        .backends
        .iter()
        .filter(|(_, b)| b.usable() && b.weight > 0)
        .map(|(address, b)| (*address, b.weight, b.id))
        .collect();
    if service.table_inputs.as_ref() != Some(&inputs)
        || service.published_layout != Some(service.layout)
    {
        let weighted: Vec<WeightedBackend> = inputs
            .iter()
            .map(|&(address, weight, _)| WeightedBackend { address, weight })
            .collect();
        let table: Vec<u32> = maglev::build_table(&weighted, service.layout.size)
            .into_iter()
            .map(|i| inputs[i as usize].2)
            .collect();
        dataplane
            .publish_table(&service.key, service.layout, &table)
            .with_context(|| {
                format!(
                    "publishing the table of service {} failed",
                    service.config.id()
                )
            })?;
        info!(service = %service.config.id(), backends = inputs.len(), "table published");
        service.table_inputs = Some(inputs);
        service.published_layout = Some(service.layout);
    }
    for backend in service.backends.values_mut() {
        if !backend.usable() && backend.published.take().is_some() {
            dataplane.remove_backend(service.id, backend.id)?;
        }
    }
    Ok(())
}

fn service_key(id: &ServiceId) -> ServiceKey {
    ServiceKey {
        addr: ipv4_mapped(id.vip.octets()),
        port_be: id.port.to_be(),
        protocol: id.protocol.number(),
        _pad: 0,
    }
}

const fn scheduler_flags(scheduler: Scheduler) -> u32 {
    match scheduler {
        Scheduler::Maglev => 0,
        Scheduler::SourceHash => SERVICE_FLAG_SOURCE_HASH,
    }
}

/// The lowest base where `len` entries fit between the `used` (base, len) regions.
fn first_fit(used: &[(u32, u32)], len: u32, capacity: u32) -> Option<u32> {
    let mut used = used.to_vec();
    used.sort_unstable();
    let mut base = 0u32;
    for (start, size) in used {
        if start >= base && start - base >= len {
            return Some(base);
        }
        base = base.max(start + size);
    }
    (capacity.checked_sub(base)? >= len).then_some(base)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        Config::parse(&format!("[director]\ninterface = \"eth0\"\n{text}")).unwrap()
    }

    const WEB: &str = "[[service]]\nvip = \"198.18.0.100\"\nport = 80\nprotocol = \"tcp\"\n\
                       [[service.backend]]\naddress = \"198.18.0.11\"\n";

    #[test]
    fn first_fit_finds_gaps_and_the_end() {
        assert_eq!(first_fit(&[], 10, 100), Some(0));
        assert_eq!(first_fit(&[(0, 10), (30, 10)], 20, 100), Some(10));
        assert_eq!(first_fit(&[(0, 10), (30, 10)], 21, 100), Some(40));
        assert_eq!(first_fit(&[(0, 10), (30, 10)], 61, 100), None);
    }

    #[test]
    fn map_sizes_leave_room_for_default_services() {
        let c = config(WEB);
        assert_eq!(map_sizes(&c).maglev_entries, DEFAULT_MAGLEV_ENTRIES);
        let big = config(&WEB.replace(
            "protocol = \"tcp\"",
            "protocol = \"tcp\"\ntable_size = 655373",
        ));
        assert_eq!(
            map_sizes(&big).maglev_entries,
            2 * 655_373 + (MAX_SERVICES - 1) * 2 * DEFAULT_TABLE_SIZE,
        );
    }

    #[test]
    fn changes_edit_the_config_or_say_what_is_wrong() {
        let c = config(WEB);
        let web: ServiceId = "tcp/198.18.0.100:80".parse().unwrap();
        let backend = |a: &str| BackendConfig {
            interface: None,
            address: a.parse().unwrap(),
            weight: 2,
            mac: None,
        };
        let added = Change::BackendAdd {
            service: web,
            backend: backend("198.18.0.12"),
        }
        .edit(&c)
        .unwrap();
        assert_eq!(added.services[0].backends.len(), 2);
        let err = Change::BackendAdd {
            service: web,
            backend: backend("198.18.0.11"),
        }
        .edit(&c)
        .unwrap_err();
        assert!(err.to_string().contains("has backend 198.18.0.11 already"));
        let weighted = Change::BackendSetWeight {
            service: web,
            address: "198.18.0.11".parse().unwrap(),
            weight: 0,
        }
        .edit(&c)
        .unwrap();
        assert_eq!(weighted.services[0].backends[0].weight, 0);
        let err = Change::BackendRemove {
            service: web,
            address: "198.18.0.99".parse().unwrap(),
        }
        .edit(&c)
        .unwrap_err();
        assert!(err.to_string().contains("has no backend 198.18.0.99"));
        let other: ServiceId = "udp/198.18.0.100:80".parse().unwrap();
        assert!(
            Change::ServiceRemove { service: other }
                .edit(&c)
                .unwrap_err()
                .to_string()
                .contains("no service udp 198.18.0.100:80")
        );
        assert!(
            Change::ServiceRemove { service: web }
                .edit(&c)
                .unwrap()
                .services
                .is_empty()
        );
    }

    #[test]
    fn backend_states_name_why_a_backend_gets_no_new_flows() {
        let mut b = BackendState {
            egress: Egress {
                ifindex: 1,
                mac: [2, 0, 0, 0, 0, 2],
            },
            id: 0,
            weight: 1,
            configured_mac: None,
            neighbour_mac: Some([2, 0, 0, 0, 0, 1]),
            health: Health::new(),
            leaving: false,
            published: None,
        };
        assert_eq!((b.state(), b.usable()), ("active", true));
        b.weight = 0;
        assert_eq!((b.state(), b.usable()), ("drained", true));
        b.neighbour_mac = None;
        assert_eq!((b.state(), b.usable()), ("no-mac", false));
        b.neighbour_mac = Some([2, 0, 0, 0, 0, 1]);
        b.health.record(false, 1, 1);
        assert_eq!((b.state(), b.usable()), ("down", false));
    }
}
