//! Which service a packet belongs to and which backend serves it: the flow table first, so
//! established flows keep their backend; else the service's Maglev table, and the choice is
//! remembered.
//!
//! Every word userspace may change is read once, into a local (see lb-common's consistency
//! rules): a packet is judged on one version of each word, never on a mix.

use lb_common::{
    BackendEntry, FlowEntry, MAX_BACKENDS_PER_SERVICE, SERVICE_FLAG_SOURCE_HASH, ServiceState,
    TableDesc, Verdict, backend_index, table_desc_index, table_index,
};

use crate::{
    family::Family,
    maps::{
        BACKENDS, SERVICE_KEYS, SERVICE_STATES, SERVICES, TABLES, holds_words, load_u64,
        maglev_slot,
    },
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
pub fn service<A: Family>(flow: &Flow<A>) -> Option<Service> {
    let id = flow
        .daddr
        .with_service_key(flow.dport, flow.protocol, |key| SERVICES.get_ptr(key))?;
    // SAFETY: the value is a u32 set at insert and never updated; read once.
    let id = unsafe { core::ptr::read_volatile(id) };
    live_service(id)
}

/// Service `id`, if it is live (a key whose state is not live is being added or removed: not
/// a service yet, or any more).
#[inline(always)]
fn live_service(id: u32) -> Option<Service> {
    let state = ServiceState::unpack(load_u64(&SERVICE_STATES, id)?);
    state.is_live().then_some(Service { id, state })
}

/// A packet's service, and the backend the flow table remembers for its flow if it is still
/// usable.
///
/// The flow table is read first: a remembered flow names its service (id and generation), so
/// a hit needs no `SERVICES` lookup. That is the service the lookup would find: the entry was
/// written for the service that held the flow's (VIP, port, protocol) key, a service id given
/// to another key carries another generation (see `ServiceState::generation`), a removed
/// service is not live, and an entry the LRU recycled under us for another service's flow
/// fails the `SERVICE_KEYS` check.
#[inline(always)]
pub fn lookup<A: Family>(flow: &Flow<A>) -> Option<(Service, Option<Chosen>)> {
    // Read whole, once (the LRU may recycle the element under us; then we see another flow's
    // entry, which the checks below reject unless it is of a live service and its generation).
    if let Some(entry) = A::remembered(&A::flow_key(flow))
        && let Some(service) = live_service(entry.service_id())
        && service.state.generation == entry.generation
        && is_service_of(service.id, flow)
    {
        // A backend that has left: the flow is scheduled again.
        let backend = backend_entry(entry.backend);
        let chosen = backend.is_usable().then_some(Chosen {
            index: entry.backend,
            backend,
            new: false,
        });
        return Some((service, chosen));
    }
    Some((service(flow)?, None))
}

/// Whether service `id` is the one of the flow's (VIP, port, protocol): its `SERVICE_KEYS`
/// words, each read once (written before the id was made live, so never half-written then).
#[inline(always)]
fn is_service_of<A: Family>(id: u32, flow: &Flow<A>) -> bool {
    SERVICE_KEYS.get_ptr(id).is_some_and(|stored| {
        holds_words(
            stored,
            flow.daddr.service_key_words(flow.dport, flow.protocol),
        )
    })
}

/// A new choice from the service's live Maglev bank for the flow, remembered. The flow's key
/// is built again here rather than kept from [`lookup`]: kept, it would live on the stack
/// across every call in between, and the entry point's frame has no room for it.
#[inline(always)]
pub fn schedule_and_remember<A: Family>(
    service: Service,
    flow: &Flow<A>,
) -> Result<Chosen, Verdict> {
    let chosen = schedule(service, flow)?;
    let entry = FlowEntry {
        backend: chosen.index,
        generation: service.state.generation,
    };
    A::remember(&A::flow_key(flow), entry);
    Ok(chosen)
}

/// The backend a flow has or would get, as [`backend`] finds it, but nothing is remembered:
/// for packets that are about a flow without being part of it (ICMP errors quoting it).
#[inline(always)]
pub fn backend_of<A: Family>(service: Service, flow: &Flow<A>) -> Result<Chosen, Verdict> {
    match remembered::<A>(service, &A::flow_key(flow)) {
        Some(chosen) => Ok(chosen),
        None => schedule(service, flow),
    }
}

/// The flow table's backend for `key`, if it is of this service's generation and usable.
#[inline(always)]
fn remembered<A: Family>(service: Service, key: &A::FlowKey) -> Option<Chosen> {
    // Read whole, once (the LRU may recycle the element under us; then we see another flow's
    // entry, which the checks below reject unless it is of this service and generation).
    let entry = A::remembered(key)?;
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
fn schedule<A: Family>(service: Service, flow: &Flow<A>) -> Result<Chosen, Verdict> {
    let desc = load_u64(&TABLES, table_desc_index(service.id, service.state.bank))
        .map(TableDesc::unpack)
        .ok_or(Verdict::Aborted)?;
    if desc.size == 0 {
        return Err(Verdict::DropNoBackend);
    }
    let hash = if service.state.flags & SERVICE_FLAG_SOURCE_HASH != 0 {
        A::source_hash(flow.saddr)
    } else {
        A::flow_hash(flow)
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
