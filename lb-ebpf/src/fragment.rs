//! IP fragments of service traffic (IPv4, and IPv6's Fragment header). Only the first fragment (MF set, offset 0) carries the
//! ports: it is scheduled like any packet, and its backend remembered in `FRAGMENTS` under the
//! datagram's (source, destination, IP id, protocol; `FRAGMENTS6`: source, destination,
//! 32-bit id); the later fragments follow it by that
//! key. A later fragment whose first was not seen cannot be placed and is dropped
//! (`drop_fragment_orphan`): the sender's datagram is lost, as on any path that reorders
//! fragments across a stateless box.
//!
//! Source-hash services are remembered too: a later fragment carries no port, so without the
//! entry nothing would say which of the VIP's services it belongs to.

use aya_ebpf::programs::XdpContext;
use lb_common::{Event, FlowEntry, SERVICE_FLAG_STANDBY, ServiceState, Verdict};

use crate::{
    family::Family,
    forward,
    maps::{self, SERVICE_STATES, load_u64},
    parse::Fragment,
    select::{self, Chosen, Service},
    stats,
};

/// Remembers where the first fragment of the datagram `key` went.
#[inline(always)]
pub fn remember<A: Family>(key: &Fragment<A>, service: Service, chosen: &Chosen) {
    let entry = FlowEntry {
        backend: chosen.index,
        generation: service.state.generation,
    };
    A::remember_fragment(key, entry);
}

/// A later fragment of the datagram `key`, to `daddr`: sent where its first fragment went.
#[inline(always)]
pub fn follow<A: Family>(
    ctx: &XdpContext,
    daddr: A,
    key: Fragment<A>,
    vlan: u16,
    frame_len: u64,
) -> Verdict {
    if !maps::is_vip(daddr) {
        return Verdict::Pass;
    }
    if let Err(verdict) = forward::ours(ctx, vlan) {
        return verdict;
    }
    let Some(entry) = A::fragment_of(&key) else {
        return Verdict::DropFragmentOrphan;
    };
    let service_id = entry.service_id();
    let state = ServiceState::unpack(load_u64(&SERVICE_STATES, service_id).unwrap_or(0));
    // The service was removed or its id given to another since the first fragment.
    if !state.is_live() || state.generation != entry.generation {
        return Verdict::DropFragment;
    }
    if state.flags & SERVICE_FLAG_STANDBY != 0 {
        return Verdict::DropStandby;
    }
    let backend = select::backend_entry(entry.backend);
    if !backend.is_usable() {
        return Verdict::DropNoBackend;
    }
    let verdict = forward::to_backend(ctx, backend, vlan);
    if matches!(verdict, Verdict::Tx | Verdict::Redirect) {
        stats::count_forwarded(service_id, entry.backend, frame_len, false);
        stats::count_event(Event::FragmentForward);
    }
    verdict
}
