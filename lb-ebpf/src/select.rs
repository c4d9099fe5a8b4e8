//! Which service a packet belongs to and which backend serves it: the flow table first, so
//! established flows keep their backend; else the service's Maglev table, and the choice is
//! remembered.
//!
//! Every word userspace may change is read once, into a local (see lb-common's consistency
//! rules): a packet is judged on one version of each word, never on a mix.

use lb_common::{
    BackendEntry, FlowEntry, FlowKey, MAX_BACKENDS_PER_SERVICE, SERVICE_FLAG_SOURCE_HASH,
    ServiceKey, ServiceState, TableDesc, Verdict, backend_index,
    hash::{flow_hash_v4, source_hash_v4},
    ipv4_mapped, table_desc_index, table_index,
};

use crate::{
    maps::{BACKENDS, FLOWS, SERVICE_STATES, SERVICES, TABLES, load_u64, maglev_slot},
    parse::Flow,
};

/// A live service: its id and the state word read for this packet.
#[derive(Clone, Copy)]
pub struct Service {
    pub id: u32,
    pub state: ServiceState,
}

/// A backend chosen for a packet: its `backend_index` and the entry read for this packet.
#[derive(Clone, Copy)]
pub struct Chosen {
    pub index: u32,
    pub backend: BackendEntry,
    /// Scheduled now (a flow-table miss), not remembered.
    pub new: bool,
}

#[inline(always)]
pub fn service(flow: &Flow) -> Option<Service> {
    let key = ServiceKey {
        addr: ipv4_mapped(flow.daddr_octets),
        port_be: flow.dport.to_be(),
        protocol: flow.protocol,
        _pad: 0,
    };
    let id = SERVICES.get_ptr(key)?;
    // SAFETY: the value is a u32 set at insert and never updated; read once.
    let id = unsafe { core::ptr::read_volatile(id) };
    let state = ServiceState::unpack(load_u64(&SERVICE_STATES, id)?);
    // A key whose state is not live is being added or removed: not a service yet, or any more.
    state.is_live().then_some(Service { id, state })
}

/// The backend of a flow: the one the flow table remembers if it is still usable, else a new
/// choice from the live Maglev bank, remembered.
#[inline(always)]
pub fn backend(service: Service, flow: &Flow) -> Result<Chosen, Verdict> {
    let key = flow_key(flow);
    if let Some(chosen) = remembered(service, &key) {
        return Ok(chosen);
    }
    let chosen = schedule(service, flow)?;
    // A full table evicts its least recently used flow; a failed insert only means the next
    // packet is scheduled again, to the same backend while the table is unchanged.
    let entry = FlowEntry {
        backend: chosen.index,
        generation: service.state.generation,
    };
    let _ = FLOWS.insert(key, entry, 0);
    Ok(chosen)
}

/// The backend a flow has or would get, as [`backend`] finds it, but nothing is remembered:
/// for packets that are about a flow without being part of it (ICMP errors quoting it).
#[inline(always)]
pub fn backend_of(service: Service, flow: &Flow) -> Result<Chosen, Verdict> {
    match remembered(service, &flow_key(flow)) {
        Some(chosen) => Ok(chosen),
        None => schedule(service, flow),
    }
}

#[inline(always)]
fn flow_key(flow: &Flow) -> FlowKey {
    FlowKey {
        saddr: flow.saddr.to_be_bytes(),
        daddr: flow.daddr_octets,
        sport_be: flow.sport.to_be(),
        dport_be: flow.dport.to_be(),
        protocol: flow.protocol,
        _pad: [0; 3],
    }
}

/// The flow table's backend for `key`, if it is of this service's generation and usable.
#[inline(always)]
fn remembered(service: Service, key: &FlowKey) -> Option<Chosen> {
    let entry = FLOWS.get_ptr(key)?;
    // SAFETY: FlowEntry is one aligned u64: read whole, once (the LRU may recycle the
    // element under us; then we see another flow's entry, which the checks below reject
    // unless it is of this service and generation).
    let entry: FlowEntry = unsafe { core::ptr::read_volatile(entry) };
    // A flow of an earlier holder of the service id, or whose backend has left: schedule
    // it again.
    if entry.generation != service.state.generation || entry.service_id() != service.id {
        return None;
    }
    let backend = backend_entry(entry.backend);
    backend.is_usable().then_some(Chosen {
        index: entry.backend,
        backend,
        new: false,
    })
}

/// The backend the service's live Maglev bank gives a new flow.
#[inline(always)]
fn schedule(service: Service, flow: &Flow) -> Result<Chosen, Verdict> {
    let desc = load_u64(&TABLES, table_desc_index(service.id, service.state.bank))
        .map(TableDesc::unpack)
        .ok_or(Verdict::Aborted)?;
    if desc.size == 0 {
        return Err(Verdict::DropNoBackend);
    }
    let hash = if service.state.flags & SERVICE_FLAG_SOURCE_HASH != 0 {
        source_hash_v4(flow.saddr)
    } else {
        flow_hash_v4(
            flow.saddr,
            flow.daddr,
            flow.sport,
            flow.dport,
            flow.protocol,
        )
    };
    let backend_id = maglev_slot(table_index(desc, hash % desc.size)).ok_or(Verdict::Aborted)?;
    // Userspace only writes ids below the bound: anything else would reach another service.
    if backend_id >= MAX_BACKENDS_PER_SERVICE {
        return Err(Verdict::Aborted);
    }
    let index = backend_index(service.id, backend_id);
    let backend = backend_entry(index);
    if !backend.is_usable() {
        return Err(Verdict::DropNoBackend);
    }
    Ok(Chosen {
        index,
        backend,
        new: true,
    })
}

/// The `BACKENDS` word at `index`, read once (unusable if out of range).
#[inline(always)]
pub fn backend_entry(index: u32) -> BackendEntry {
    BackendEntry::unpack(load_u64(&BACKENDS, index).unwrap_or(0))
}
