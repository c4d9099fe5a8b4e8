//! Which service a packet belongs to and which backend serves it.

use lb_common::{
    Backend, MAX_BACKENDS_PER_SERVICE, Service, ServiceKey, Verdict, backend_slot, hash::flow_hash_v4, ipv4_mapped,
};

use crate::{
    maps::{BACKENDS, SERVICES, VIPS},
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

/// The backend for a flow: a hash of the 5-tuple over the live bank of the service's backends.
#[inline(always)]
pub fn backend(service: &Service, flow: &Flow) -> Result<&'static Backend, Verdict> {
    let count = service.backend_count;
    if count == 0 {
        return Err(Verdict::DropNoBackend);
    }
    if count > MAX_BACKENDS_PER_SERVICE {
        return Err(Verdict::Aborted);
    }
    let hash = flow_hash_v4(flow.saddr, flow.daddr, flow.sport, flow.dport, flow.protocol);
    BACKENDS.get(backend_slot(service.id, service.bank, hash % count)).ok_or(Verdict::Aborted)
}

/// `verdict` for a packet to a VIP, `Pass` for any other destination.
#[inline(always)]
pub fn drop_if_vip(daddr: [u8; 4], verdict: Verdict) -> Verdict {
    // SAFETY: read only.
    if unsafe { VIPS.get(&ipv4_mapped(daddr)) }.is_some() { verdict } else { Verdict::Pass }
}
