//! Direct routing: only the two MACs change (and, between VLANs of a trunk, the tag's VLAN id).
//! No byte at L3 or above is touched, so no checksum needs updating and the frame keeps its
//! length.

use aya_ebpf::programs::XdpContext;
use lb_common::{BackendEntry, Interface, NO_VLAN, VLAN_VID_MASK, Verdict};
use network_types::eth::EthHdr;

use crate::{
    maps::{EGRESS, EGRESS_SLOTS, interface},
    parse::{VLAN_TCI_OFFSET, ptr_at},
};

/// The group bit of a MAC: set for multicast and broadcast addresses.
pub const MAC_GROUP_BIT: u8 = 0x01;
pub const BROADCAST_MAC: [u8; 6] = [0xff; 6];

/// Rewrites the MACs for `backend` and sends the frame back out of the ingress interface
/// (XDP_TX) or, for a backend behind another interface of the director, redirects it there.
/// A frame on VLAN `vlan` of a trunk, for a backend on another VLAN, gets that VLAN's id in its
/// tag (the priority bits stay); userspace never pairs a tagged and an untagged interface.
#[inline(always)]
pub fn to_backend(ctx: &XdpContext, backend: BackendEntry, vlan: u16) -> Verdict {
    let Some(egress) = EGRESS_SLOTS.get(u32::from(backend.egress_slot)) else {
        return Verdict::Aborted; // userspace writes a slot before any backend names it
    };
    let egress = *egress;
    let Some(eth) = ptr_at::<EthHdr>(ctx, 0) else {
        return Verdict::Aborted; // parsed before, so it is there
    };
    if egress.vlan != vlan {
        if egress.vlan == NO_VLAN || vlan == NO_VLAN {
            return Verdict::DropNoEgress; // adding or removing a tag: refused by userspace
        }
        let Some(tci) = ptr_at::<[u8; 2]>(ctx, VLAN_TCI_OFFSET) else {
            return Verdict::Aborted; // parsed before, so it is there
        };
        // SAFETY: ptr_at checked the bounds; alignment 1.
        unsafe {
            let old = u16::from_be_bytes(*tci);
            *tci = ((old & !VLAN_VID_MASK) | egress.vlan).to_be_bytes();
        }
    }
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

/// The ingress interface (the device, or the VLAN `vlan` on it), if the frame was sent to its
/// own MAC: only such frames are forwarded. `Pass` otherwise: a frame a switch floods, one seen
/// in promiscuous mode, or one on a VLAN (or untagged on a trunk) the director does not serve
/// is someone else's.
#[inline(always)]
pub fn ours(ctx: &XdpContext, vlan: u16) -> Result<Interface, Verdict> {
    let interface = interface(ctx.ingress_ifindex() as u32, vlan).ok_or(Verdict::Pass)?;
    let eth = ptr_at::<EthHdr>(ctx, 0).ok_or(Verdict::Aborted)?;
    // SAFETY: ptr_at checked the bounds; read only.
    if unsafe { (*eth).dst_addr } == interface.mac {
        Ok(interface)
    } else {
        Err(Verdict::Pass)
    }
}
