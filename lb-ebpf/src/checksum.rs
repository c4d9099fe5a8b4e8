//! The veth checksum trap: a sender on a local veth with tx checksum offload on (the default)
//! leaves TCP/UDP checksums unfinished for the "NIC" to complete, holding only the folded
//! pseudo-header sum. The stack would finish them; XDP forwards the frame as it is, and the real
//! servers drop it, silently. On interfaces where this can happen (veth), the first frame of a
//! new flow is looked at and such a frame counted (`Event::BadChecksum`), so the daemon can say
//! what is wrong. Nothing is changed; flow-table hits never come here.

use aya_ebpf::programs::XdpContext;
use lb_common::{Event, INTERFACE_FLAG_CHECK_CHECKSUMS, IPPROTO_TCP, IPPROTO_UDP, Interface};

use crate::{
    family::Family,
    parse::{Flow, ptr_at},
    stats,
};

/// Where the checksum field lies in the TCP and the UDP header.
const TCP_CHECK_OFFSET: usize = 16;
const UDP_CHECK_OFFSET: usize = 6;
/// A UDP checksum of 0 means "none" (IPv4), which is finished; IPv6 forbids it, but a 0 is
/// never what a sender leaves unfinished either (a folded sum is never 0 but for all-zero
/// input), so it is not counted.
const UDP_NO_CHECKSUM: u16 = 0;
const WORD_BITS: u32 = 16;
const WORD_MASK: u32 = 0xffff;

/// Counts the frame if its ingress `interface` checks checksums and its checksum is unfinished.
#[inline(always)]
pub fn note_unfinished<A: Family>(ctx: &XdpContext, flow: &Flow<A>, interface: &Interface) {
    if interface.flags & INTERFACE_FLAG_CHECK_CHECKSUMS == 0 {
        return;
    }
    let field_offset = match flow.protocol {
        IPPROTO_TCP => TCP_CHECK_OFFSET,
        IPPROTO_UDP => UDP_CHECK_OFFSET,
        _ => return,
    };
    let Some(field) = ptr_at::<[u8; 2]>(ctx, flow.l4_offset + field_offset) else {
        return;
    };
    // SAFETY: ptr_at checked the bounds; read only.
    let field = u16::from_be_bytes(unsafe { *field });
    if flow.protocol == IPPROTO_UDP && field == UDP_NO_CHECKSUM {
        return;
    }
    if field == pseudo_header_sum(flow) {
        stats::count_event(Event::BadChecksum);
    }
}

/// The folded one's-complement sum of the pseudo-header (addresses, protocol, TCP/UDP length;
/// IPv6's has the same words, its length and next header as 32-bit fields whose high halves
/// are 0): what an unfinished checksum holds.
#[inline(always)]
fn pseudo_header_sum<A: Family>(flow: &Flow<A>) -> u16 {
    fold(A::address_sum(flow) + u32::from(flow.protocol) + u32::from(flow.l4_len))
}

/// A one's-complement checksum after one 16-bit word it covers changed from `old` to `new`
/// (RFC 1624, eqn. 3: HC' = ~(~HC + ~m + m')), all in host order.
#[inline(always)]
pub fn replace_word(check: u16, old: u16, new: u16) -> u16 {
    !fold(u32::from(!check) + u32::from(!old) + u32::from(new))
}

/// `sum` plus the big-endian 16-bit words of `bytes` (of even length), unfolded: sums of a few
/// dozen words stay far from overflowing 32 bits.
#[inline(always)]
pub fn add_words<const N: usize>(mut sum: u32, bytes: &[u8; N]) -> u32 {
    const { assert!(N.is_multiple_of(2)) };
    let mut i = 0;
    while i < N {
        sum += u32::from(u16::from_be_bytes([bytes[i], bytes[i + 1]]));
        i += 2;
    }
    sum
}

/// A 32-bit one's-complement sum folded into 16 bits (two carries at most).
#[inline(always)]
pub fn fold(mut sum: u32) -> u16 {
    sum = (sum & WORD_MASK) + (sum >> WORD_BITS);
    sum = (sum & WORD_MASK) + (sum >> WORD_BITS);
    sum as u16
}
