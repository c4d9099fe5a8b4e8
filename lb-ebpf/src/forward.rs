//! Direct routing: only the two MACs change. No byte at L3 or above is touched, so no checksum
//! needs updating and the frame keeps its length.

use aya_ebpf::programs::XdpContext;
use lb_common::{BackendEntry, Interface, Verdict};
use network_types::eth::EthHdr;

use crate::{
    maps::{EGRESS, EGRESS_SLOTS, interface},
    parse::ptr_at,
};

/// The group bit of a MAC: set for multicast and broadcast addresses.
pub const MAC_GROUP_BIT: u8 = 0x01;
pub const BROADCAST_MAC: [u8; 6] = [0xff; 6];

/// Rewrites the MACs for `backend` and sends the frame back out of the ingress interface
/// (XDP_TX) or, for a backend behind another interface of the director, redirects it there.
#[inline(always)]
pub fn to_backend(ctx: &XdpContext, backend: BackendEntry) -> Verdict {
    let Some(egress) = EGRESS_SLOTS.get(u32::from(backend.egress_slot)) else {
        return Verdict::Aborted; // userspace writes a slot before any backend names it
    };
    let egress = *egress;
    let Some(eth) = ptr_at::<EthHdr>(ctx, 0) else {
        return Verdict::Aborted; // parsed before, so it is there
    };
    // SAFETY: ptr_at checked the bounds; EthHdr's MAC fields have alignment 1.
    unsafe {
        (*eth).dst_addr = backend.mac;
        (*eth).src_addr = egress.mac;
    }
    if egress.ifindex as usize == ctx.ingress_ifindex() {
        return Verdict::Tx;
    }
    match EGRESS.redirect(egress.ifindex, 0) {
        Ok(_) => Verdict::Redirect,
        // Not an interface userspace registered: never send the frame anywhere else.
        Err(_) => Verdict::DropNoEgress,
    }
}

/// The ingress interface, if the frame was sent to its own MAC: only such frames are
/// forwarded (`Pass` otherwise: a frame a switch floods, or one seen in promiscuous mode, is
/// someone else's). `Aborted` for an interface userspace did not register, which cannot be.
#[inline(always)]
pub fn ours(ctx: &XdpContext) -> Result<Interface, Verdict> {
    let interface = interface(ctx.ingress_ifindex() as u32).ok_or(Verdict::Aborted)?;
    let eth = ptr_at::<EthHdr>(ctx, 0).ok_or(Verdict::Aborted)?;
    // SAFETY: ptr_at checked the bounds; read only.
    if unsafe { (*eth).dst_addr } == interface.mac {
        Ok(interface)
    } else {
        Err(Verdict::Pass)
    }
}
