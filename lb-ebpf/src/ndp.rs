//! Neighbour discovery for IPv6 VIPs (RFC 4861), the IPv6 counterpart of [`crate::arp`]: the
//! real servers hold the VIP on `lo` and do not answer for it, so the director answers Neighbor
//! Solicitations for an active VIP with a Neighbor Advertisement from its own MAC, in place.
//!
//! Only an ICMPv6 message directly behind the fixed IPv6 header is looked at (a Neighbor
//! Solicitation or Advertisement with extension headers is left to the stack). A message is
//! valid as RFC 4861 7.1.1/7.1.2 require of a receiver: hop limit 255, code 0, a length of at
//! least the 24-byte header, in whole 8-byte option units, a correct ICMPv6 checksum, and no
//! option of length 0. Invalid ones, and every one not answered, pass: the stack drops what it
//! finds invalid.
//!
//! Decisions:
//! - A DAD probe (source `::`) for a VIP is not answered: it is another host about to claim the
//!   VIP, which conflict detection counts (`conflict::note_claim`); a director that holds the
//!   VIP as an address has its kernel defend it (`ff02::1`, S clear), as RFC 4862 5.4.3 wants.
//! - A standby VIP answers nothing; one that is also a director address has every valid
//!   solicitation for it dropped (`Verdict::DropNdpStandby`), as `DropArpStandby` for ARP.
//! - Messages longer than [`MAX_NDP_LEN`] (more options than any real solicitation carries) are
//!   not answered: the checksum and the option walk stay bounded for the verifier.

use aya_ebpf::{helpers::bpf_xdp_adjust_tail, programs::XdpContext};
use lb_common::{
    Addr, IPPROTO_ICMPV6, VIP_FLAG_ACTIVE, VIP_FLAG_LOCAL, Verdict, vip_filter_bit_v6,
};
use network_types::{eth::EthHdr, ip::Ipv6Hdr};

use crate::{
    conflict,
    forward::MAC_GROUP_BIT,
    maps::{VIP_FILTER, VIP_STATES, VIPS, interface, load_u32, load_u64},
    parse::{frame_len, ptr_at},
};

pub const ICMPV6_NEIGHBOR_SOLICITATION: u8 = 135;
pub const ICMPV6_NEIGHBOR_ADVERTISEMENT: u8 = 136;
const IPV6_VERSION: u8 = 6;
/// RFC 4861 7.1: a neighbour discovery message with another hop limit crossed a router.
const NDP_HOP_LIMIT: u8 = 255;
const NDP_CODE: u8 = 0;
/// Type, code, checksum, flags (or reserved), target address.
const NDP_HEADER_LEN: usize = 24;
const NDP_CHECKSUM_AT: usize = 2;
const NDP_FLAGS_AT: usize = 4;
const NDP_TARGET_AT: usize = 8;
/// Options are counted in units of 8 bytes.
const OPTION_UNIT: usize = 8;
/// Most option units looked at: a solicitation carries one (its source link-layer address),
/// a DAD probe perhaps a nonce; more is not answered.
const MAX_OPTION_UNITS: usize = 8;
pub const MAX_NDP_LEN: usize = NDP_HEADER_LEN + MAX_OPTION_UNITS * OPTION_UNIT;
const OPTION_SOURCE_LLA: u8 = 1;
const OPTION_TARGET_LLA: u8 = 2;
/// An Ethernet link-layer address option: type, length (in units), MAC.
const LLA_OPTION_UNITS: u8 = 1;
const LLA_MAC_AT: usize = 2;
const NA_FLAG_SOLICITED: u8 = 0x40;
const NA_FLAG_OVERRIDE: u8 = 0x20;
/// The advertisement: its header and the target link-layer address option.
const NA_LEN: usize = NDP_HEADER_LEN + OPTION_UNIT;
/// Version 6, traffic class and flow label 0.
const IPV6_VCF: [u8; 4] = [0x60, 0, 0, 0];
/// `ff02::1:ff00:0/104`: the solicited-node multicast prefix (RFC 4291 2.7.1), followed by the
/// address's last 3 bytes.
const SOLICITED_NODE_PREFIX: [u8; 13] = [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0xff];
const SOLICITED_NODE_SUFFIX_AT: usize = 13;
/// An IPv6 multicast address's MAC: `33:33` and its last 4 bytes (RFC 2464 7).
const IPV6_MULTICAST_MAC_PREFIX: [u8; 2] = [0x33, 0x33];
const IPV6_MULTICAST_MAC_SUFFIX_AT: usize = 12;
const UNSPECIFIED: Addr = [0; 16];
const IPV6_MULTICAST_FIRST_BYTE: u8 = 0xff;
const WORD_BITS: u32 = 16;
const WORD_MASK: u32 = 0xffff;
/// A correct checksum makes the sum over pseudo-header and message all ones.
const CHECKSUM_OK: u16 = 0xffff;

/// The verdict for the IPv6 packet at `offset` (on VLAN `vlan`) if it is a Neighbor
/// Solicitation or Advertisement, `None` for any other packet. Advertisements and
/// solicitations claiming a VIP for another MAC are counted as conflicts; a solicitation for an
/// active VIP, addressed to us, is answered.
#[inline(always)]
pub fn handle(ctx: &XdpContext, offset: usize, vlan: u16) -> Option<Verdict> {
    let ip = ptr_at::<Ipv6Hdr>(ctx, offset)?;
    // SAFETY: ptr_at checked the bounds; Ipv6Hdr has alignment 1. Read only.
    let ip = unsafe { &*ip };
    if ip.vcf[0] >> 4 != IPV6_VERSION || ip.next_hdr != IPPROTO_ICMPV6 {
        return None;
    }
    let l4_offset = offset + Ipv6Hdr::LEN;
    let kind: *const u8 = ptr_at(ctx, l4_offset)?;
    // SAFETY: as above.
    let kind = unsafe { *kind };
    let wanted_lla = match kind {
        ICMPV6_NEIGHBOR_SOLICITATION => OPTION_SOURCE_LLA,
        ICMPV6_NEIGHBOR_ADVERTISEMENT => OPTION_TARGET_LLA,
        _ => return None,
    };
    // From here on the packet is neighbour discovery: never forwarded, passed unless answered.
    let Some(message) = valid_message(ctx, ip, l4_offset, wanted_lla) else {
        return Some(Verdict::Pass);
    };
    let Some(eth) = ptr_at::<EthHdr>(ctx, 0) else {
        return Some(Verdict::Pass);
    };
    // SAFETY: as above.
    let sender_mac = unsafe { (*eth).src_addr };
    // The MAC neighbours would learn: the option's, else the frame's.
    let claimed_mac = message.lla.unwrap_or(sender_mac);
    let (source, target) = (ip.src_addr, message.target);
    if kind == ICMPV6_NEIGHBOR_ADVERTISEMENT {
        if is_vip(target) {
            conflict::note_claim(ctx, vlan, claimed_mac, target, true);
        }
        return Some(Verdict::Pass);
    }
    // A solicitation from a VIP (a real server using it as source), or a DAD probe for one
    // (another host about to take it).
    if source != UNSPECIFIED && is_vip(source) {
        conflict::note_claim(ctx, vlan, claimed_mac, source, false);
    }
    let Some(flags) = vip_flags(target) else {
        return Some(Verdict::Pass);
    };
    if source == UNSPECIFIED {
        conflict::note_claim(ctx, vlan, claimed_mac, target, false);
    }
    if flags & VIP_FLAG_ACTIVE == 0 {
        return Some(if flags & VIP_FLAG_LOCAL != 0 {
            Verdict::DropNdpStandby
        } else {
            Verdict::Pass
        });
    }
    Some(answer(ctx, offset, vlan, ip, sender_mac, target).unwrap_or(Verdict::Pass))
}

/// What a valid message says beside its header.
struct Message {
    target: Addr,
    /// The first link-layer address option of the kind the message should carry (source for
    /// a solicitation, target for an advertisement), if any.
    lla: Option<[u8; 6]>,
}

/// The message at `l4_offset` if it is valid (RFC 4861 7.1.1, 7.1.2) and not longer than
/// [`MAX_NDP_LEN`].
#[inline(always)]
fn valid_message(
    ctx: &XdpContext,
    ip: &Ipv6Hdr,
    l4_offset: usize,
    wanted_lla: u8,
) -> Option<Message> {
    let len = usize::from(u16::from_be_bytes(ip.payload_len));
    if ip.hop_limit != NDP_HOP_LIMIT
        || !(NDP_HEADER_LEN..=MAX_NDP_LEN).contains(&len)
        || len % OPTION_UNIT != 0
    {
        return None;
    }
    let header = ptr_at::<[u8; NDP_HEADER_LEN]>(ctx, l4_offset)?;
    // SAFETY: ptr_at checked the bounds; read only.
    let header = unsafe { &*header };
    if header[1] != NDP_CODE {
        return None;
    }
    let mut sum = pseudo_header_sum(&ip.src_addr, &ip.dst_addr, len);
    let mut lla = None;
    let mut next_option = NDP_HEADER_LEN;
    let mut at = 0;
    // Whole units: the header is three, each option one or more.
    for _ in 0..MAX_NDP_LEN / OPTION_UNIT {
        if at >= len {
            break;
        }
        let unit = ptr_at::<[u8; OPTION_UNIT]>(ctx, l4_offset + at)?;
        // SAFETY: as above.
        let unit = unsafe { &*unit };
        sum = add_words(sum, unit);
        if at == next_option {
            let units = usize::from(unit[1]);
            if units == 0 {
                return None; // RFC 4861 7.1.1: an option of length 0 is invalid
            }
            if lla.is_none() && unit[0] == wanted_lla && unit[1] == LLA_OPTION_UNITS {
                let mut mac = [0; 6];
                mac.copy_from_slice(&unit[LLA_MAC_AT..]);
                lla = Some(mac);
            }
            next_option += units * OPTION_UNIT;
        }
        at += OPTION_UNIT;
    }
    // The last option must end where the message does.
    if next_option != len || fold(sum) != CHECKSUM_OK {
        return None;
    }
    let mut target = [0; 16];
    target.copy_from_slice(&header[NDP_TARGET_AT..]);
    Some(Message { target, lla })
}

/// Turns the solicitation into the advertisement, in place (a tagged frame keeps its tag),
/// if it asks us: sent to the VIP's solicited-node group, or to the VIP at our MAC, from a
/// unicast address and MAC. `None`: not ours to answer.
#[inline(always)]
fn answer(
    ctx: &XdpContext,
    offset: usize,
    vlan: u16,
    ip: &Ipv6Hdr,
    requester_mac: [u8; 6],
    vip: Addr,
) -> Option<Verdict> {
    let requester = ip.src_addr;
    if requester == UNSPECIFIED
        || requester[0] == IPV6_MULTICAST_FIRST_BYTE
        || requester_mac[0] & MAC_GROUP_BIT != 0
    {
        return None;
    }
    // Untagged on a trunk, or on a VLAN not configured: not ours to answer.
    let interface = interface(ctx.ingress_ifindex() as u32, vlan)?;
    let eth = ptr_at::<EthHdr>(ctx, 0)?;
    // SAFETY: ptr_at checked the bounds; read only here.
    let eth_dst = unsafe { (*eth).dst_addr };
    let to_group = ip.dst_addr[..SOLICITED_NODE_SUFFIX_AT] == SOLICITED_NODE_PREFIX
        && ip.dst_addr[SOLICITED_NODE_SUFFIX_AT..] == vip[SOLICITED_NODE_SUFFIX_AT..]
        && eth_dst[..2] == IPV6_MULTICAST_MAC_PREFIX
        && eth_dst[2..] == ip.dst_addr[IPV6_MULTICAST_MAC_SUFFIX_AT..];
    let to_us = ip.dst_addr == vip && eth_dst == interface.mac;
    if !to_group && !to_us {
        return None;
    }
    let mut na = [0_u8; NA_LEN];
    na[0] = ICMPV6_NEIGHBOR_ADVERTISEMENT;
    na[NDP_FLAGS_AT] = NA_FLAG_SOLICITED | NA_FLAG_OVERRIDE;
    na[NDP_TARGET_AT..NDP_HEADER_LEN].copy_from_slice(&vip);
    na[NDP_HEADER_LEN] = OPTION_TARGET_LLA;
    na[NDP_HEADER_LEN + 1] = LLA_OPTION_UNITS;
    na[NDP_HEADER_LEN + LLA_MAC_AT..].copy_from_slice(&interface.mac);
    let check = !fold(add_words(pseudo_header_sum(&vip, &requester, NA_LEN), &na));
    na[NDP_CHECKSUM_AT..NDP_CHECKSUM_AT + 2].copy_from_slice(&check.to_be_bytes());
    // The advertisement's length, whatever options (and Ethernet padding) the solicitation had.
    let wanted = offset + Ipv6Hdr::LEN + NA_LEN;
    let delta = wanted as i32 - frame_len(ctx) as i32;
    // SAFETY: the helper checks the new length against the buffer; every packet pointer is
    // taken again below.
    if delta != 0 && unsafe { bpf_xdp_adjust_tail(ctx.ctx, delta) } != 0 {
        return None; // no room to grow: the stack gets the solicitation unchanged
    }
    let (Some(eth), Some(ip), Some(icmp)) = (
        ptr_at::<EthHdr>(ctx, 0),
        ptr_at::<Ipv6Hdr>(ctx, offset),
        ptr_at::<[u8; NA_LEN]>(ctx, offset + Ipv6Hdr::LEN),
    ) else {
        return Some(Verdict::Aborted); // the frame was just sized to hold them
    };
    // SAFETY: ptr_at checked every header's bounds; all fields have alignment 1 but
    // ether_type, which is not touched.
    unsafe {
        (*eth).dst_addr = requester_mac;
        (*eth).src_addr = interface.mac;
        let ip = &mut *ip;
        ip.vcf = IPV6_VCF;
        ip.payload_len = (NA_LEN as u16).to_be_bytes();
        ip.next_hdr = IPPROTO_ICMPV6;
        ip.hop_limit = NDP_HOP_LIMIT;
        ip.src_addr = vip;
        ip.dst_addr = requester;
        *icmp = na;
    }
    Some(Verdict::NdpReply)
}

/// The one's-complement sum (unfolded) of the IPv6 pseudo-header of an ICMPv6 message of
/// `len` bytes (RFC 8200 8.1).
#[inline(always)]
fn pseudo_header_sum(source: &Addr, destination: &Addr, len: usize) -> u32 {
    let sum = add_words(add_words(0, source), destination);
    // `len` is at most MAX_NDP_LEN: its upper 16-bit word is 0.
    sum + len as u32 + u32::from(IPPROTO_ICMPV6)
}

/// `sum` plus the big-endian 16-bit words of `bytes` (of even length). Sums of the few dozen
/// words here stay far from overflowing 32 bits.
#[inline(always)]
fn add_words<const N: usize>(mut sum: u32, bytes: &[u8; N]) -> u32 {
    let mut i = 0;
    while i + 1 < N {
        sum += u32::from(u16::from_be_bytes([bytes[i], bytes[i + 1]]));
        i += 2;
    }
    sum
}

#[inline(always)]
fn fold(mut sum: u32) -> u16 {
    sum = (sum & WORD_MASK) + (sum >> WORD_BITS);
    sum = (sum & WORD_MASK) + (sum >> WORD_BITS);
    sum as u16
}

/// Whether `addr` may be a VIP: false is certain (its `VIP_FILTER` bit is clear).
#[inline(always)]
fn maybe_vip(addr: Addr) -> bool {
    let bit = vip_filter_bit_v6(addr);
    load_u64(&VIP_FILTER, bit / 64).is_some_and(|word| word & (1 << (bit % 64)) != 0)
}

/// Whether the IPv6 address `addr` is a VIP (in any state).
#[inline(always)]
fn is_vip(addr: Addr) -> bool {
    maybe_vip(addr) && VIPS.get_ptr(addr).is_some()
}

/// The `VIP_STATES` word of the IPv6 address `addr` if it is a VIP.
#[inline(always)]
fn vip_flags(addr: Addr) -> Option<u32> {
    if !maybe_vip(addr) {
        return None;
    }
    let id = VIPS.get_ptr(addr)?;
    // SAFETY: the value is a u32 set at insert and never updated; read once.
    load_u32(&VIP_STATES, unsafe { core::ptr::read_volatile(id) })
}
