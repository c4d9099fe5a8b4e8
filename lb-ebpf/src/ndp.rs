//! Neighbour discovery for IPv6 VIPs (RFC 4861), the IPv6 counterpart of [`crate::arp`]: the
//! real servers hold the VIP on `lo` and do not answer for it, so the director answers Neighbor
//! Solicitations for an active VIP with a Neighbor Advertisement from its own MAC, in place.
//!
//! Only an ICMPv6 message directly behind the fixed IPv6 header is looked at (a Neighbor
//! Solicitation or Advertisement with extension headers is left to the stack). A message is
//! valid as RFC 4861 7.1.1/7.1.2 require of a receiver: hop limit 255, code 0, a length of at
//! least the 24-byte header, in whole 8-byte option units, a correct ICMPv6 checksum, no
//! option of length 0, and a target that is not multicast (nor IPv4-mapped, which is no IPv6
//! address). Invalid ones, and every one not answered, pass: the stack drops what it finds
//! invalid.
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
    IPPROTO_ICMPV6, IPV4_MAPPED_PREFIX_LEN, VIP_FLAG_ACTIVE, VIP_FLAG_LOCAL, Verdict, ipv4_mapped,
};
use network_types::{eth::EthHdr, ip::Ipv6Hdr};

use crate::{
    checksum::{add_words, fold},
    conflict::{self, MAC_WORD_MASK, MacWord, mac_word},
    forward::MAC_GROUP_BIT,
    maps::{interface, is_vip, vip_flags},
    parse::{IPV6_VERSION, Ipv6, frame_len, ptr_at},
};

pub const ICMPV6_NEIGHBOR_SOLICITATION: u8 = 135;
pub const ICMPV6_NEIGHBOR_ADVERTISEMENT: u8 = 136;
/// RFC 4861 7.1: a neighbour discovery message with another hop limit crossed a router.
const NDP_HOP_LIMIT: u8 = 255;
const NDP_CODE: u8 = 0;
/// Type, code, checksum, flags (or reserved), target address.
const NDP_HEADER_LEN: usize = 24;
/// The source and destination addresses, the IPv6 header's last bytes.
const IPV6_ADDRESSES_LEN: usize = 32;
const NDP_CODE_AT: usize = 1;
const NDP_CHECKSUM_AT: usize = 2;
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
const SOLICITED_NODE_PREFIX: Ipv6 =
    words([0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0xff, 0, 0, 0]);
const SOLICITED_NODE_PREFIX_LEN: usize = 13;
const SOLICITED_NODE_PREFIX_MASK: Ipv6 = prefix_mask(SOLICITED_NODE_PREFIX_LEN);
const SOLICITED_NODE_SUFFIX: Ipv6 = [
    !SOLICITED_NODE_PREFIX_MASK[0],
    !SOLICITED_NODE_PREFIX_MASK[1],
];
/// An IPv6 multicast address's MAC: `33:33` and its last 4 bytes (RFC 2464 7).
const IPV6_MULTICAST_MAC_PREFIX: [u8; 2] = [0x33, 0x33];
const IPV6_MULTICAST_MAC_SUFFIX_AT: usize = 12;
const UNSPECIFIED: Ipv6 = [0; 2];
/// `::ffff:0:0/96`, the IPv4-mapped addresses, in which `VIPS` holds IPv4 VIPs.
const IPV4_MAPPED_PREFIX: Ipv6 = words(ipv4_mapped([0; 4]));
const IPV4_MAPPED_PREFIX_MASK: Ipv6 = prefix_mask(IPV4_MAPPED_PREFIX_LEN);
const IPV6_MULTICAST_FIRST_BYTE: u8 = 0xff;
/// The destination MAC's length: the source MAC follows it.
const MAC_LEN: usize = 6;
/// A correct checksum makes the sum over pseudo-header and message all ones.
const CHECKSUM_OK: u16 = 0xffff;

/// The verdict for the IPv6 packet at `offset` (on VLAN `vlan`) if it is a Neighbor
/// Solicitation or Advertisement, `None` for any other packet. Advertisements and
/// solicitations claiming a VIP for another MAC are counted as conflicts; a solicitation for an
/// active VIP, addressed to us, is answered.
///
/// Addresses and MACs are held as words ([`Ipv6`], [`MacWord`]) and read from the packet
/// where they are needed rather than copied: as bytes, each would take a register, and a stack
/// slot across every helper call (the frame must stay small, see `answer_ndp` in main.rs).
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
    let (Some(message), Some(eth)) = (
        valid_message(ctx, ip, l4_offset, wanted_lla),
        ptr_at::<EthHdr>(ctx, 0),
    ) else {
        return Some(Verdict::Pass);
    };
    // The MAC neighbours would learn: the option's, else the frame's.
    // SAFETY: as above.
    let claimed_mac = message
        .lla
        .unwrap_or_else(|| load_macs(unsafe { &*eth })[1]);
    let (source, target) = (load_ipv6(&ip.src_addr), message.target);
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
    Some(answer(ctx, offset, vlan).unwrap_or(Verdict::Pass))
}

/// What a valid message says beside its header.
struct Message {
    target: Ipv6,
    /// The first link-layer address option of the kind the message should carry (source for
    /// a solicitation, target for an advertisement), if any.
    lla: Option<MacWord>,
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
    if ip.hop_limit != NDP_HOP_LIMIT {
        return None;
    }
    // The options' length, checked on the value the loop below is bounded by: the verifier
    // must see the bound on the register the loop uses.
    let options_len =
        usize::from(u16::from_be_bytes(ip.payload_len)).checked_sub(NDP_HEADER_LEN)?;
    if options_len > MAX_NDP_LEN - NDP_HEADER_LEN || options_len % OPTION_UNIT != 0 {
        return None;
    }
    let len = NDP_HEADER_LEN + options_len;
    let header = ptr_at::<[u8; NDP_HEADER_LEN]>(ctx, l4_offset)?;
    // SAFETY: ptr_at checked the bounds; read only.
    let header = unsafe { &*header };
    if header[NDP_CODE_AT] != NDP_CODE {
        return None;
    }
    // The pseudo-header's addresses, which lie right before the message, then the message,
    // in units: the header is three, each option one or more. A loop, not unrolled: at most
    // (IPV6_ADDRESSES_LEN + MAX_NDP_LEN) / OPTION_UNIT rounds, as `len` is bounded above.
    let mut sum = len as u32 + u32::from(IPPROTO_ICMPV6);
    let mut lla = None;
    let mut next_option = l4_offset + NDP_HEADER_LEN;
    let mut at = l4_offset - IPV6_ADDRESSES_LEN;
    let end = l4_offset + len;
    while at < end {
        let unit = ptr_at::<[u8; OPTION_UNIT]>(ctx, at)?;
        // SAFETY: as above.
        let unit = unsafe { &*unit };
        sum = add_words(sum, unit);
        if at == next_option {
            let units = usize::from(unit[1]);
            if units == 0 {
                return None; // RFC 4861 7.1.1: an option of length 0 is invalid
            }
            if lla.is_none() && unit[0] == wanted_lla && unit[1] == LLA_OPTION_UNITS {
                lla = Some(option_mac(unit));
            }
            next_option += units * OPTION_UNIT;
        }
        at += OPTION_UNIT;
    }
    // The last option must end where the message does.
    if next_option != end || fold(sum) != CHECKSUM_OK {
        return None;
    }
    let target = load_ipv6(target_field(header));
    // RFC 4861 7.1.1: a multicast target is invalid. An IPv4-mapped one is no IPv6 address
    // (and would name an IPv4 VIP's key).
    if target[0].to_ne_bytes()[0] == IPV6_MULTICAST_FIRST_BYTE
        || masked(target, IPV4_MAPPED_PREFIX_MASK) == IPV4_MAPPED_PREFIX
    {
        return None;
    }
    Some(Message { target, lla })
}

/// The target address field of the message that starts with `message`.
#[inline(always)]
fn target_field<const N: usize>(message: &[u8; N]) -> &[u8; 16] {
    const { assert!(N >= NDP_HEADER_LEN) };
    // SAFETY: the field's 16 bytes lie within `message` (checked above); alignment 1.
    unsafe { &*message.as_ptr().add(NDP_TARGET_AT).cast::<[u8; 16]>() }
}

/// Turns the solicitation into the advertisement, in place (a tagged frame keeps its tag),
/// if it asks us: sent to the VIP's solicited-node group, or to the VIP at our MAC, from a
/// unicast address and MAC. `None`: not ours to answer. Everything is read from the frame:
/// resizing it keeps the headers and the target where they are.
#[inline(always)]
fn answer(ctx: &XdpContext, offset: usize, vlan: u16) -> Option<Verdict> {
    let l4_offset = offset + Ipv6Hdr::LEN;
    let (eth, ip, header) = (
        ptr_at::<EthHdr>(ctx, 0)?,
        ptr_at::<Ipv6Hdr>(ctx, offset)?,
        ptr_at::<[u8; NDP_HEADER_LEN]>(ctx, l4_offset)?,
    );
    // SAFETY: ptr_at checked every header's bounds; read only here.
    let (eth, ip, header) = unsafe { (&*eth, &*ip, &*header) };
    let requester = load_ipv6(&ip.src_addr);
    if requester == UNSPECIFIED
        || ip.src_addr[0] == IPV6_MULTICAST_FIRST_BYTE
        || eth.src_addr[0] & MAC_GROUP_BIT != 0
    {
        return None;
    }
    // Untagged on a trunk, or on a VLAN not configured: not ours to answer.
    let our_mac = mac_word(interface(ctx.ingress_ifindex() as u32, vlan)?.mac);
    let (vip, destination) = (load_ipv6(target_field(header)), load_ipv6(&ip.dst_addr));
    let [eth_dst, _] = load_macs(eth);
    let to_group = masked(destination, SOLICITED_NODE_PREFIX_MASK) == SOLICITED_NODE_PREFIX
        && masked(destination, SOLICITED_NODE_SUFFIX) == masked(vip, SOLICITED_NODE_SUFFIX)
        && eth_dst == multicast_mac(&ip.dst_addr);
    let to_us = destination == vip && eth_dst == our_mac;
    if !to_group && !to_us {
        return None;
    }
    // The advertisement's length, whatever options (and Ethernet padding) the solicitation had.
    let wanted = l4_offset + NA_LEN;
    let delta = wanted as i32 - frame_len(ctx) as i32;
    // SAFETY: the helper checks the new length against the buffer; every packet pointer is
    // taken again below.
    if delta != 0 && unsafe { bpf_xdp_adjust_tail(ctx.ctx, delta) } != 0 {
        return None; // no room to grow: the stack gets the solicitation unchanged
    }
    let (Some(eth), Some(ip), Some(icmp)) = (
        ptr_at::<EthHdr>(ctx, 0),
        ptr_at::<Ipv6Hdr>(ctx, offset),
        ptr_at::<[u8; NA_LEN]>(ctx, l4_offset),
    ) else {
        return Some(Verdict::Aborted); // the frame was just sized to hold them
    };
    // SAFETY: ptr_at checked every header's bounds; all fields have alignment 1 but
    // ether_type, which is not touched. The target stays where the solicitation had it.
    unsafe {
        let (eth, ip, icmp) = (&mut *eth, &mut *ip, &mut *icmp);
        eth.dst_addr = eth.src_addr;
        let [a, b, c, d, e, f, ..] = our_mac.to_ne_bytes();
        eth.src_addr = [a, b, c, d, e, f];
        ip.vcf = IPV6_VCF;
        ip.payload_len = (NA_LEN as u16).to_be_bytes();
        ip.next_hdr = IPPROTO_ICMPV6;
        ip.hop_limit = NDP_HOP_LIMIT;
        store_ipv6(&mut ip.dst_addr, load_ipv6(&ip.src_addr));
        store_ipv6(&mut ip.src_addr, load_ipv6(target_field(icmp)));
        icmp[..NDP_TARGET_AT].copy_from_slice(&[
            ICMPV6_NEIGHBOR_ADVERTISEMENT,
            NDP_CODE,
            0,
            0,
            NA_FLAG_SOLICITED | NA_FLAG_OVERRIDE,
            0,
            0,
            0,
        ]);
        icmp[NDP_HEADER_LEN..].copy_from_slice(&[
            OPTION_TARGET_LLA,
            LLA_OPTION_UNITS,
            a,
            b,
            c,
            d,
            e,
            f,
        ]);
        let check = !fold(add_words(pseudo_header_sum(ip, NA_LEN), icmp));
        icmp[NDP_CHECKSUM_AT..NDP_CHECKSUM_AT + 2].copy_from_slice(&check.to_be_bytes());
    }
    Some(Verdict::NdpReply)
}

/// The one's-complement sum (unfolded) of the IPv6 pseudo-header of the ICMPv6 message of
/// `len` bytes behind `ip` (RFC 8200 8.1), its addresses read from the packet.
#[inline(always)]
fn pseudo_header_sum(ip: &Ipv6Hdr, len: usize) -> u32 {
    let sum = add_words(add_words(0, &ip.src_addr), &ip.dst_addr);
    // `len` is at most MAX_NDP_LEN: its upper 16-bit word is 0.
    sum + len as u32 + u32::from(IPPROTO_ICMPV6)
}

/// `addr`'s bits where `mask`'s are set.
#[inline(always)]
fn masked(addr: Ipv6, mask: Ipv6) -> Ipv6 {
    [addr[0] & mask[0], addr[1] & mask[1]]
}

/// The multicast MAC of the IPv6 multicast address `wire`.
#[inline(always)]
fn multicast_mac(wire: &[u8; 16]) -> MacWord {
    let [a, b] = IPV6_MULTICAST_MAC_PREFIX;
    let [.., c, d, e, f] = *wire;
    const { assert!(IPV6_MULTICAST_MAC_SUFFIX_AT == 12) };
    mac_word([a, b, c, d, e, f])
}

/// An IPv6 address in the packet, read as two words: each an unaligned load, which the
/// compiler keeps as one value (bytes assembled into words, it would keep the bytes, each in a
/// register or a stack slot of its own).
#[inline(always)]
fn load_ipv6(wire: &[u8; 16]) -> Ipv6 {
    let words = wire.as_ptr().cast::<u64>();
    // SAFETY: both words lie within `wire`; unaligned reads.
    unsafe { [words.read_unaligned(), words.add(1).read_unaligned()] }
}

/// Writes `addr` to `wire`, in the packet.
#[inline(always)]
fn store_ipv6(wire: &mut [u8; 16], addr: Ipv6) {
    let words = wire.as_mut_ptr().cast::<u64>();
    // SAFETY: both words lie within `wire`; unaligned writes.
    unsafe {
        words.write_unaligned(addr[0]);
        words.add(1).write_unaligned(addr[1]);
    }
}

/// The destination and source MACs of the frame, read as words (each MAC's 6 bytes and the 2
/// that follow it in the header, masked off).
#[inline(always)]
fn load_macs(eth: &EthHdr) -> [MacWord; 2] {
    let header = core::ptr::from_ref(eth).cast::<u8>();
    let word_at = |at| {
        // SAFETY: 8 bytes from either address lie within the header (the source address is
        // followed by the EtherType); unaligned reads.
        unsafe { header.add(at).cast::<u64>().read_unaligned() & MAC_WORD_MASK }
    };
    [word_at(0), word_at(MAC_LEN)]
}

/// The MAC of a link-layer address option (type, length, MAC), read as one word.
#[inline(always)]
fn option_mac(option: &[u8; OPTION_UNIT]) -> MacWord {
    // SAFETY: the word is the option; unaligned read.
    let word = unsafe { option.as_ptr().cast::<u64>().read_unaligned() };
    // Its bytes from LLA_MAC_AT on, moved to the word's first bytes in memory.
    let shift = 8 * LLA_MAC_AT as u32;
    if cfg!(target_endian = "little") {
        word >> shift
    } else {
        word << shift
    }
}

/// The mask of an address's first `len` bytes.
const fn prefix_mask(len: usize) -> Ipv6 {
    let mut wire = [0; 16];
    let mut i = 0;
    while i < len {
        wire[i] = 0xff;
        i += 1;
    }
    words(wire)
}

/// `parse::ipv6` for constants.
const fn words(wire: [u8; 16]) -> Ipv6 {
    let [a, b, c, d, e, f, g, h, i, j, k, l, m, n, o, p] = wire;
    [
        u64::from_ne_bytes([a, b, c, d, e, f, g, h]),
        u64::from_ne_bytes([i, j, k, l, m, n, o, p]),
    ]
}
