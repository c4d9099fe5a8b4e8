//! Typed access to the program's maps: the only place userspace writes what the data path reads.

use anyhow::{Context as _, Result};
use aya::{
    Ebpf,
    maps::{Array, HashMap, MapData, MapError, PerCpuArray},
};
use lb_common::{
    Addr, BACKEND_BANKS, Backend, Counter, Interface, MAX_BACKENDS_PER_SERVICE, Service,
    ServiceKey, Verdict, Vip, backend_counter_slot, backend_slot, map_names,
};

pub struct Dataplane {
    services: HashMap<MapData, ServiceKey, Service>,
    backends: Array<MapData, Backend>,
    vips: HashMap<MapData, Addr, Vip>,
    interfaces: HashMap<MapData, u32, Interface>,
    service_counters: PerCpuArray<MapData, Counter>,
    backend_counters: PerCpuArray<MapData, Counter>,
    verdict_counters: PerCpuArray<MapData, Counter>,
}

fn take<T: TryFrom<aya::maps::Map, Error = MapError>>(ebpf: &mut Ebpf, name: &str) -> Result<T> {
    let map = ebpf
        .take_map(name)
        .with_context(|| format!("the eBPF object has no map {name}"))?;
    T::try_from(map).with_context(|| format!("map {name} has an unexpected type"))
}

impl Dataplane {
    /// Takes ownership of the maps of a loaded program.
    pub fn take_from(ebpf: &mut Ebpf) -> Result<Self> {
        Ok(Self {
            services: take(ebpf, map_names::SERVICES)?,
            backends: take(ebpf, map_names::BACKENDS)?,
            vips: take(ebpf, map_names::VIPS)?,
            interfaces: take(ebpf, map_names::INTERFACES)?,
            service_counters: take(ebpf, map_names::SERVICE_COUNTERS)?,
            backend_counters: take(ebpf, map_names::BACKEND_COUNTERS)?,
            verdict_counters: take(ebpf, map_names::VERDICT_COUNTERS)?,
        })
    }

    /// Registers an interface the program is attached to (its MAC answers ARP).
    pub fn set_interface(&mut self, ifindex: u32, mac: [u8; 6]) -> Result<()> {
        self.interfaces
            .insert(ifindex, Interface { mac, _pad: [0; 2] }, 0)
            .context("writing INTERFACES failed")
    }

    pub fn set_vip(&mut self, addr: Addr, vip: Vip) -> Result<()> {
        self.vips
            .insert(addr, vip, 0)
            .context("writing VIPS failed")
    }

    pub fn remove_vip(&mut self, addr: &Addr) -> Result<()> {
        self.vips.remove(addr).context("removing from VIPS failed")
    }

    /// Publishes the backend list of a service: writes it into the bank the program is not
    /// reading, then flips the service's bank with one (atomic) hash-map update.
    pub fn publish_service(
        &mut self,
        key: &ServiceKey,
        id: u32,
        backends: &[Backend],
    ) -> Result<()> {
        anyhow::ensure!(
            backends.len() <= MAX_BACKENDS_PER_SERVICE as usize,
            "a service has at most {MAX_BACKENDS_PER_SERVICE} backends"
        );
        let bank = match self.services.get(key, 0) {
            Ok(live) => (live.bank + 1) % BACKEND_BANKS,
            Err(MapError::KeyNotFound) => 0,
            Err(e) => return Err(e).context("reading SERVICES failed"),
        };
        for (position, backend) in (0..).zip(backends) {
            self.backends
                .set(backend_slot(id, bank, position), backend, 0)
                .context("writing BACKENDS failed")?;
        }
        let service = Service {
            id,
            bank,
            backend_count: backends.len() as u32,
        };
        self.services
            .insert(key, service, 0)
            .context("writing SERVICES failed")
    }

    pub fn remove_service(&mut self, key: &ServiceKey) -> Result<()> {
        self.services
            .remove(key)
            .context("removing from SERVICES failed")
    }

    /// The live service entry, as the program sees it.
    pub fn service(&self, key: &ServiceKey) -> Result<Option<Service>> {
        match self.services.get(key, 0) {
            Ok(service) => Ok(Some(service)),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(e).context("reading SERVICES failed"),
        }
    }

    pub fn verdict_counter(&self, verdict: Verdict) -> Result<Counter> {
        sum(&self.verdict_counters, verdict as u32)
    }

    pub fn service_counter(&self, service_id: u32) -> Result<Counter> {
        sum(&self.service_counters, service_id)
    }

    pub fn backend_counter(&self, service_id: u32, counter: u32) -> Result<Counter> {
        sum(
            &self.backend_counters,
            backend_counter_slot(service_id, counter),
        )
    }

    /// Zeroes a backend counter, so a new backend in a reused slot starts from zero.
    pub fn reset_backend_counter(&mut self, service_id: u32, counter: u32) -> Result<()> {
        let index = backend_counter_slot(service_id, counter);
        let zeros = self
            .backend_counters
            .get(&index, 0)
            .context("reading BACKEND_COUNTERS failed")?;
        let zeros = aya::maps::PerCpuValues::try_from(vec![Counter::default(); zeros.len()])?;
        self.backend_counters
            .set(index, zeros, 0)
            .context("writing BACKEND_COUNTERS failed")
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
