//! Typed access to the program's maps: the only place userspace writes what the data path reads.

use std::collections::HashMap as StdHashMap;

use anyhow::{Context as _, Result, ensure};
use aya::{
    Ebpf,
    maps::{Array, DevMapHash, HashMap, MapData, MapError, PerCpuArray, PerCpuValues},
};
use lb_common::{
    Addr, Backend, Counter, FlowEntry, FlowKey, Interface, Service, ServiceKey, TABLE_BANKS,
    Verdict, Vip, backend_index, map_names,
};

/// Where a service's Maglev table lives in `MAGLEV` and how it is scheduled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableLayout {
    pub service_id: u32,
    /// First entry of the service's region (`TABLE_BANKS * size` entries).
    pub base: u32,
    /// Entries of one bank.
    pub size: u32,
    /// `SERVICE_FLAG_*`.
    pub flags: u32,
}

/// What the dataplane last wrote into each bank of a service's region, so a flip only writes
/// the entries that differ (Maglev moves few entries per change).
struct TableShadow {
    layout: TableLayout,
    banks: [Option<Vec<u32>>; TABLE_BANKS as usize],
}

pub struct Dataplane {
    services: HashMap<MapData, ServiceKey, Service>,
    maglev: Array<MapData, u32>,
    backends: HashMap<MapData, u32, Backend>,
    // aya reads an LRU hash map through HashMap.
    flows: HashMap<MapData, FlowKey, FlowEntry>,
    vips: HashMap<MapData, Addr, Vip>,
    interfaces: HashMap<MapData, u32, Interface>,
    egress: DevMapHash<MapData>,
    service_counters: PerCpuArray<MapData, Counter>,
    backend_counters: PerCpuArray<MapData, Counter>,
    verdict_counters: PerCpuArray<MapData, Counter>,
    shadows: StdHashMap<u32, TableShadow>,
}

fn take<T: TryFrom<aya::maps::Map, Error = MapError>>(ebpf: &mut Ebpf, name: &str) -> Result<T> {
    let map = ebpf
        .take_map(name)
        .with_context(|| format!("the eBPF object has no map {name}"))?;
    T::try_from(map).with_context(|| format!("map {name} has an unexpected type"))
}

fn ignore_missing(result: Result<(), MapError>) -> Result<(), MapError> {
    match result {
        Err(MapError::KeyNotFound) => Ok(()),
        other => other,
    }
}

impl Dataplane {
    /// Takes ownership of the maps of a loaded program.
    pub fn take_from(ebpf: &mut Ebpf) -> Result<Self> {
        Ok(Self {
            services: take(ebpf, map_names::SERVICES)?,
            maglev: take(ebpf, map_names::MAGLEV)?,
            backends: take(ebpf, map_names::BACKENDS)?,
            flows: take(ebpf, map_names::FLOWS)?,
            vips: take(ebpf, map_names::VIPS)?,
            interfaces: take(ebpf, map_names::INTERFACES)?,
            egress: take(ebpf, map_names::EGRESS)?,
            service_counters: take(ebpf, map_names::SERVICE_COUNTERS)?,
            backend_counters: take(ebpf, map_names::BACKEND_COUNTERS)?,
            verdict_counters: take(ebpf, map_names::VERDICT_COUNTERS)?,
            shadows: StdHashMap::new(),
        })
    }

    /// Entries of the `MAGLEV` array, as sized at load.
    #[must_use]
    pub fn maglev_capacity(&self) -> u32 {
        self.maglev.len()
    }

    /// Registers an interface the program is attached to (its MAC answers ARP).
    pub fn set_interface(&mut self, ifindex: u32, mac: [u8; 6]) -> Result<()> {
        self.interfaces
            .insert(ifindex, Interface { mac, _pad: [0; 2] }, 0)
            .context("writing INTERFACES failed")
    }

    /// Lets the program redirect frames to the interface `ifindex` (for backends behind it).
    pub fn set_egress(&mut self, ifindex: u32) -> Result<()> {
        self.egress
            .insert(ifindex, ifindex, None, 0)
            .with_context(|| format!("writing EGRESS for ifindex {ifindex} failed"))
    }

    pub fn set_vip(&mut self, addr: Addr, vip: Vip) -> Result<()> {
        self.vips
            .insert(addr, vip, 0)
            .context("writing VIPS failed")
    }

    pub fn remove_vip(&mut self, addr: &Addr) -> Result<()> {
        ignore_missing(self.vips.remove(addr)).context("removing from VIPS failed")
    }

    /// Makes a backend reachable by its id (flows and table entries refer to it).
    pub fn set_backend(
        &mut self,
        service_id: u32,
        backend_id: u32,
        backend: &Backend,
    ) -> Result<()> {
        self.backends
            .insert(backend_index(service_id, backend_id), backend, 0)
            .context("writing BACKENDS failed")
    }

    /// Makes a backend unreachable: its flows are scheduled again on their next packet.
    pub fn remove_backend(&mut self, service_id: u32, backend_id: u32) -> Result<()> {
        ignore_missing(self.backends.remove(&backend_index(service_id, backend_id)))
            .context("removing from BACKENDS failed")
    }

    /// Publishes a service's Maglev table (backend ids; empty: no backend): writes it into the
    /// bank the program is not reading, then replaces the service entry with one that points
    /// at that bank (an atomic hash-map update), so the program never sees a half-written table.
    pub fn publish_table(
        &mut self,
        key: &ServiceKey,
        layout: TableLayout,
        table: &[u32],
    ) -> Result<()> {
        ensure!(
            table.is_empty() || table.len() == layout.size as usize,
            "a table has {} entries, not {}",
            layout.size,
            table.len()
        );
        ensure!(
            u64::from(layout.base) + u64::from(TABLE_BANKS) * u64::from(layout.size)
                <= u64::from(self.maglev_capacity()),
            "the service's table region lies outside MAGLEV"
        );
        let live = self.service(key)?.filter(|s| s.id == layout.service_id);
        let shadow = self
            .shadows
            .entry(layout.service_id)
            .or_insert_with(|| TableShadow {
                layout,
                banks: [None, None],
            });
        if shadow.layout != layout {
            *shadow = TableShadow {
                layout,
                banks: [None, None],
            };
        }
        let bank = live
            .filter(|s| s.table_base == layout.base)
            .map_or(0, |s| (s.bank + 1) % TABLE_BANKS);
        if !table.is_empty() {
            let base = layout.base + bank * layout.size;
            let previous = shadow.banks[bank as usize].take();
            for (slot, &id) in (0..).zip(table) {
                if previous.as_ref().is_none_or(|p| p[slot as usize] != id) {
                    self.maglev
                        .set(base + slot, id, 0)
                        .context("writing MAGLEV failed")?;
                }
            }
            shadow.banks[bank as usize] = Some(table.to_vec());
        }
        let table_size = if table.is_empty() { 0 } else { layout.size };
        let service = Service {
            id: layout.service_id,
            bank,
            table_base: layout.base,
            table_size,
            flags: layout.flags,
        };
        self.services
            .insert(key, service, 0)
            .context("writing SERVICES failed")
    }

    /// Replaces only the flags of a published service (same table, same bank) with one atomic
    /// map update: how a director turns standby or active without rewriting any table.
    pub fn set_service_flags(&mut self, key: &ServiceKey, flags: u32) -> Result<()> {
        let Some(mut service) = self.service(key)? else {
            return Ok(());
        };
        service.flags = flags;
        self.services
            .insert(key, service, 0)
            .context("writing SERVICES failed")
    }

    pub fn remove_service(&mut self, key: &ServiceKey, service_id: u32) -> Result<()> {
        self.shadows.remove(&service_id);
        ignore_missing(self.services.remove(key)).context("removing from SERVICES failed")
    }

    /// The live service entry, as the program sees it.
    pub fn service(&self, key: &ServiceKey) -> Result<Option<Service>> {
        match self.services.get(key, 0) {
            Ok(service) => Ok(Some(service)),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(e).context("reading SERVICES failed"),
        }
    }

    /// The flow table's entry for a 5-tuple.
    pub fn flow(&self, key: &FlowKey) -> Result<Option<FlowEntry>> {
        match self.flows.get(key, 0) {
            Ok(entry) => Ok(Some(entry)),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(e).context("reading FLOWS failed"),
        }
    }

    pub fn verdict_counter(&self, verdict: Verdict) -> Result<Counter> {
        sum(&self.verdict_counters, verdict as u32)
    }

    pub fn service_counter(&self, service_id: u32) -> Result<Counter> {
        sum(&self.service_counters, service_id)
    }

    pub fn backend_counter(&self, service_id: u32, backend_id: u32) -> Result<Counter> {
        sum(
            &self.backend_counters,
            backend_index(service_id, backend_id),
        )
    }

    /// Zeroes a service's counter, for an id given to a new service.
    pub fn reset_service_counter(&mut self, service_id: u32) -> Result<()> {
        zero(&mut self.service_counters, service_id)
    }

    /// Zeroes a backend's counter, for an id given to a new backend.
    pub fn reset_backend_counter(&mut self, service_id: u32, backend_id: u32) -> Result<()> {
        zero(
            &mut self.backend_counters,
            backend_index(service_id, backend_id),
        )
    }
}

/// The sum over all CPUs of one per-CPU counter.
fn sum(map: &PerCpuArray<MapData, Counter>, index: u32) -> Result<Counter> {
    let per_cpu = map.get(&index, 0).context("reading a counter map failed")?;
    Ok(per_cpu.iter().fold(Counter::default(), |acc, c| Counter {
        packets: acc.packets + c.packets,
        bytes: acc.bytes + c.bytes,
    }))
}

fn zero(map: &mut PerCpuArray<MapData, Counter>, index: u32) -> Result<()> {
    let cpus = map
        .get(&index, 0)
        .context("reading a counter map failed")?
        .len();
    let zeros = PerCpuValues::try_from(vec![Counter::default(); cpus])?;
    map.set(index, zeros, 0)
        .context("writing a counter map failed")
}
