//! Direct routing: only the two MACs change. No byte at L3 or above is touched, so no checksum
//! needs updating and the frame keeps its length.

use aya_ebpf::programs::XdpContext;
use lb_common::{Backend, Verdict};
use network_types::eth::EthHdr;

use crate::{maps::EGRESS, parse::ptr_at};

/// Rewrites the MACs for `backend` and sends the frame back out of the ingress interface
/// (XDP_TX) or, for a backend behind another interface of the director, redirects it there.
#[inline(always)]
pub fn to_backend(ctx: &XdpContext, backend: &Backend) -> Verdict {
    let Some(eth) = ptr_at::<EthHdr>(ctx, 0) else {
        return Verdict::Aborted; // parsed before, so it is there
    };
    // SAFETY: ptr_at checked the bounds; EthHdr's MAC fields have alignment 1.
    unsafe {
        (*eth).dst_addr = backend.dst_mac;
        (*eth).src_addr = backend.src_mac;
    }
    if backend.ifindex as usize == ctx.ingress_ifindex() {
        return Verdict::Tx;
    }
    match EGRESS.redirect(backend.ifindex, 0) {
        Ok(_) => Verdict::Redirect,
        // Not an interface userspace registered: never send the frame anywhere else.
        Err(_) => Verdict::DropNoEgress,
    }
}
