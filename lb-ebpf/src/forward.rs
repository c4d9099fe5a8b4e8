//! Direct routing: only the two MACs change. No byte at L3 or above is touched, so no checksum
//! needs updating and the frame keeps its length.

use aya_ebpf::programs::XdpContext;
use lb_common::{Backend, Verdict};
use network_types::eth::EthHdr;

use crate::parse::ptr_at;

#[inline(always)]
pub fn to_backend(ctx: &XdpContext, backend: &Backend) -> Verdict {
    // Backends behind another interface need a redirect, which this director does not do (yet).
    if backend.ifindex as usize != ctx.ingress_ifindex() {
        return Verdict::DropNoEgress;
    }
    let Some(eth) = ptr_at::<EthHdr>(ctx, 0) else {
        return Verdict::Aborted; // parsed before, so it is there
    };
    // SAFETY: ptr_at checked the bounds; EthHdr's MAC fields have alignment 1.
    unsafe {
        (*eth).dst_addr = backend.dst_mac;
        (*eth).src_addr = backend.src_mac;
    }
    Verdict::Tx
}
