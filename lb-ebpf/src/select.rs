//! Which service a packet belongs to and which backend serves it: the flow table first, so
//! established flows keep their backend; else the service's Maglev table, and the choice is
//! remembered.

use lb_common::{
    Backend, FlowEntry, FlowKey, SERVICE_FLAG_SOURCE_HASH, Service, ServiceKey, Verdict,
    backend_index,
    hash::{flow_hash_v4, source_hash_v4},
    ipv4_mapped, table_index,
};

use crate::{
    maps::{BACKENDS, FLOWS, MAGLEV, SERVICES, VIPS},
    parse::Flow,
};

#[inline(always)]
pub fn service(flow: &Flow) -> Option<&'static Service> {
    let key = ServiceKey {
        addr: ipv4_mapped(flow.daddr_octets),
        port_be: flow.dport.to_be(),
        protocol: flow.protocol,
        _pad: 0,
    };
    // SAFETY: the value is only read; userspace replaces it whole, never in place.
    unsafe { SERVICES.get(&key) }
}

/// The backend of a flow and its `backend_index`.
#[inline(always)]
pub fn backend(service: &Service, flow: &Flow) -> Result<(&'static Backend, u32), Verdict> {
    let key = FlowKey {
        saddr: flow.saddr.to_be_bytes(),
        daddr: flow.daddr_octets,
        sport_be: flow.sport.to_be(),
        dport_be: flow.dport.to_be(),
        protocol: flow.protocol,
        _pad: [0; 3],
    };
    // SAFETY: read only; the entry is copied out before anything else can change it.
    if let Some(entry) = unsafe { FLOWS.get(&key) }.copied() {
        // A backend that has left (no BACKENDS entry) or a service id reused by another
        // service: schedule the flow again.
        if entry.service == service.id {
            // SAFETY: read only.
            if let Some(backend) = unsafe { BACKENDS.get(&entry.backend) } {
                return Ok((backend, entry.backend));
            }
        }
    }
    let index = schedule(service, flow)?;
    // SAFETY: read only.
    let backend = unsafe { BACKENDS.get(&index) }.ok_or(Verdict::DropNoBackend)?;
    // A full table evicts its least recently used flow; a failed insert only means the next
    // packet is scheduled again, to the same backend while the table is unchanged.
    let _ = FLOWS.insert(
        &key,
        &FlowEntry {
            service: service.id,
            backend: index,
        },
        0,
    );
    Ok((backend, index))
}

/// The backend index the service's Maglev table gives a new flow.
#[inline(always)]
fn schedule(service: &Service, flow: &Flow) -> Result<u32, Verdict> {
    if service.table_size == 0 {
        return Err(Verdict::DropNoBackend);
    }
    let hash = if service.flags & SERVICE_FLAG_SOURCE_HASH != 0 {
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
    let backend_id = MAGLEV
        .get(table_index(service, hash % service.table_size))
        .ok_or(Verdict::Aborted)?;
    Ok(backend_index(service.id, *backend_id))
}

/// `verdict` for a packet to a VIP, `Pass` for any other destination.
#[inline(always)]
pub fn drop_if_vip(daddr: [u8; 4], verdict: Verdict) -> Verdict {
    // SAFETY: read only.
    if unsafe { VIPS.get(&ipv4_mapped(daddr)) }.is_some() {
        verdict
    } else {
        Verdict::Pass
    }
}
