//! Header parsing. [`ptr_at`] is the only place that compares against `data_end`; everything
//! else asks it for a header at an offset and gets `None` when the frame is too short.

use core::mem::size_of;

use aya_ebpf::{helpers::bpf_xdp_get_buff_len, programs::XdpContext};
use lb_common::{
    IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, IPV4_MAPPED_PREFIX_LEN,
    MAX_HEADER_OFFSET, MAX_IPV6_EXTENSION_HEADERS, NO_VLAN, VLAN_VID_MASK, Verdict, ipv4_mapped,
};
use network_types::{
    eth::{EthHdr, EtherType},
    ip::{Ipv4Hdr, Ipv6Hdr},
    tcp::TcpHdr,
    udp::UdpHdr,
    vlan::VlanHdr,
};

const IPV4_VERSION: u8 = 4;
const IPV4_MIN_HEADER_LEN: usize = Ipv4Hdr::LEN;
/// "More fragments" flag and fragment offset, in the host-order flags/offset field.
const IPV4_MF_AND_OFFSET: u16 = 0x3fff;
/// The fragment offset alone: zero in a first fragment (and in a whole packet).
const IPV4_OFFSET_MASK: u16 = 0x1fff;

/// The version field of an IPv6 header (its first 4 bits).
pub const IPV6_VERSION: u8 = 6;
/// IPv6 extension headers the parser walks (RFC 8200 section 4): hop-by-hop options,
/// routing, fragment, destination options. Any other next header ends the walk.
const IPV6_HOP_BY_HOP: u8 = 0;
const IPV6_ROUTING: u8 = 43;
/// "No next header" (RFC 8200 4.7): nothing follows to balance.
const IPV6_NO_NEXT_HEADER: u8 = 59;
/// The Routing header's segments-left byte (after next header, length and routing type).
const IPV6_ROUTING_SEGMENTS_LEFT_AT: usize = 3;
const IPV6_FRAGMENT: u8 = 44;
const IPV6_DESTINATION_OPTIONS: u8 = 60;
/// An extension header's length field counts 8-byte units beyond the first 8 bytes.
const IPV6_EXTENSION_UNIT: usize = 8;
/// The Fragment header: 8 bytes; its offset (13 bits, in 8-byte units) and M flag share a
/// 16-bit field at byte 2, the identification follows at byte 4.
const IPV6_FRAGMENT_HEADER_LEN: usize = 8;
const IPV6_FRAGMENT_OFFSET_MASK: u16 = 0xfff8;
const IPV6_FRAGMENT_MORE: u16 = 0x0001;

/// A pointer to a `T` at `offset` in the frame, if the frame holds all of it.
#[inline(always)]
pub fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Option<*mut T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + size_of::<T>() > end {
        return None;
    }
    Some((start + offset) as *mut T)
}

/// The whole frame's length. The program is frags-aware (multi-buffer XDP, for jumbo frames):
/// `data_end` ends the first buffer, which holds the headers, and the rest of a long frame
/// lies in fragments only this helper counts.
#[inline(always)]
pub fn frame_len(ctx: &XdpContext) -> usize {
    // SAFETY: the helper only reads the context the kernel passed to the program.
    unsafe { bpf_xdp_get_buff_len(ctx.ctx) as usize }
}

/// The network layer found behind the Ethernet header (and any VLAN tags), with its offset.
pub enum L3 {
    Arp(usize),
    Ipv4(usize),
    Ipv6(usize),
    Other,
}

/// What the Ethernet header says: the network layer, and the VLAN the frame is on.
pub struct Ethernet {
    pub l3: L3,
    /// The VID of the frame's one 802.1Q tag, [`NO_VLAN`] for an untagged frame. A frame with
    /// two tags (QinQ) is on no interface of the director: its `l3` is `Other` (it passes).
    pub vlan: u16,
}

/// Where the one 802.1Q tag's TCI lies in a tagged frame.
pub const VLAN_TCI_OFFSET: usize = EthHdr::LEN;

#[inline(always)]
pub fn ethernet(ctx: &XdpContext) -> Result<Ethernet, Verdict> {
    let eth: *const EthHdr = ptr_at(ctx, 0).ok_or(Verdict::DropMalformed)?;
    // SAFETY: ptr_at checked that the header lies within the frame.
    let mut ether_type = unsafe { (*eth).ether_type };
    let mut offset = EthHdr::LEN;
    let mut vlan = NO_VLAN;
    if ether_type == EtherType::Ieee8021q as u16 {
        let tag: *const VlanHdr = ptr_at(ctx, offset).ok_or(Verdict::DropMalformed)?;
        // SAFETY: as above.
        let tag = unsafe { &*tag };
        vlan = u16::from_be_bytes(tag.tci) & VLAN_VID_MASK;
        ether_type = tag.ether_type;
        offset += VlanHdr::LEN;
    }
    // Stacked tags (802.1ad outside, or a second 802.1Q) belong to a provider's network, not
    // to a VLAN the director serves: such frames pass untouched.
    let l3 = if ether_type == EtherType::Ieee8021q as u16
        || ether_type == EtherType::Ieee8021ad as u16
    {
        L3::Other
    } else if ether_type == EtherType::Arp as u16 {
        L3::Arp(offset)
    } else if ether_type == EtherType::Ipv4 as u16 {
        L3::Ipv4(offset)
    } else if ether_type == EtherType::Ipv6 as u16 {
        L3::Ipv6(offset)
    } else {
        L3::Other
    };
    Ok(Ethernet { l3, vlan })
}

/// An IPv6 address as two words holding its wire bytes (in memory order: `to_ne_bytes` gives
/// the wire bytes back). Sixteen separate bytes would each take a register, and a stack slot
/// of 8 bytes whenever they live across a helper call; two words take two.
pub type Ipv6 = [u64; 2];

/// Whether an IPv6 address (as on the wire) is IPv4-mapped (`::ffff:0:0/96`), the form in
/// which `SERVICES` and `VIPS` hold IPv4 addresses.
#[inline(always)]
pub fn is_ipv4_mapped(wire: &[u8; 16]) -> bool {
    wire[..IPV4_MAPPED_PREFIX_LEN] == ipv4_mapped([0; 4])[..IPV4_MAPPED_PREFIX_LEN]
}

/// The [`Ipv6`] form of an address as on the wire.
#[inline(always)]
pub fn ipv6(wire: &[u8; 16]) -> Ipv6 {
    let [a, b, c, d, e, f, g, h, i, j, k, l, m, n, o, p] = *wire;
    [
        u64::from_ne_bytes([a, b, c, d, e, f, g, h]),
        u64::from_ne_bytes([i, j, k, l, m, n, o, p]),
    ]
}

/// The wire bytes of an [`Ipv6`] address.
#[inline(always)]
pub fn ipv6_wire(addr: Ipv6) -> [u8; 16] {
    let [a, b, c, d, e, f, g, h] = addr[0].to_ne_bytes();
    let [i, j, k, l, m, n, o, p] = addr[1].to_ne_bytes();
    [a, b, c, d, e, f, g, h, i, j, k, l, m, n, o, p]
}

/// The four host-order words of an [`Ipv6`] address, most significant first, as
/// `lb_common::hash::ipv6_words` gives them for the wire bytes (shifts, not bytes: see [`Ipv6`]).
#[inline(always)]
pub fn ipv6_words(addr: Ipv6) -> [u32; 4] {
    let [a, b] = memory_order_halves(addr[0]);
    let [c, d] = memory_order_halves(addr[1]);
    [
        u32::from_be(a),
        u32::from_be(b),
        u32::from_be(c),
        u32::from_be(d),
    ]
}

/// The first and second four bytes of `word` in memory, each as the u32 they are in memory.
#[inline(always)]
fn memory_order_halves(word: u64) -> [u32; 2] {
    // Truncating casts: each keeps exactly the half it names.
    let (low, high) = (word as u32, (word >> 32) as u32);
    if cfg!(target_endian = "little") {
        [low, high]
    } else {
        [high, low]
    }
}

/// The fields of an IPv4 or IPv6 packet that select its service and backend. `A` is the
/// family's address: `[u8; 4]` as on the wire, or [`Ipv6`].
#[derive(Clone, Copy)]
pub struct Flow<A> {
    pub saddr: A,
    pub daddr: A,
    /// Ports in host order.
    pub sport: u16,
    pub dport: u16,
    pub protocol: u8,
    /// Where the TCP/UDP header starts in the frame, and its length with the payload (the
    /// upper-layer length of the checksum's pseudo-header).
    pub l4_offset: usize,
    pub l4_len: u16,
    /// A first fragment (more fragments, offset 0): its datagram's identification as on the
    /// wire (IPv4's 16 bits in the first two bytes), so the later fragments can be sent where
    /// it went; `None` for a whole packet.
    pub first_fragment_id: Option<[u8; 4]>,
}

/// What identifies a datagram's fragments (IPv4: source, destination, id, protocol; IPv6:
/// source, destination, the Fragment header's id), as on the wire.
#[derive(Clone, Copy)]
pub struct Fragment<A> {
    pub saddr: A,
    pub daddr: A,
    pub id: [u8; 4],
    pub protocol: u8,
}

impl<A: Copy> Flow<A> {
    /// The key of the datagram this first fragment begins.
    #[inline(always)]
    pub fn fragment(&self, id: [u8; 4]) -> Fragment<A> {
        Fragment {
            saddr: self.saddr,
            daddr: self.daddr,
            id,
            protocol: self.protocol,
        }
    }
}

/// Why a packet has no [`Flow`].
#[derive(Clone, Copy)]
pub enum Unroutable<A> {
    /// Not TCP or UDP: never balanced (to a VIP: the stack's, or dropped; see `main.rs`).
    NotBalanced { daddr: A },
    /// A later fragment (offset > 0) of a TCP/UDP datagram: the ports are not in this packet.
    Fragment { daddr: A, key: Fragment<A> },
    /// A whole ICMP (ICMPv6) packet (not a fragment); its header starts at `l4_offset`,
    /// `l4_len` bytes with the payload.
    Icmp {
        daddr: A,
        l4_offset: usize,
        l4_len: usize,
    },
    /// The IP header is fine but the TCP/UDP header is cut short (IPv6: or an extension
    /// header, or more of them than the parser walks).
    Truncated { daddr: A },
    /// The IP header itself is cut short or inconsistent.
    Malformed,
}

/// Whether a packet that ends `packet_len` bytes after `offset` fits the frame. Ethernet
/// padding may make the frame longer than the packet, never shorter. The whole length of a
/// multi-buffer frame is asked for only when the first buffer is too short.
#[inline(always)]
fn fits_frame(ctx: &XdpContext, offset: usize, packet_len: usize) -> bool {
    offset + packet_len <= ctx.data_end() - ctx.data() || offset + packet_len <= frame_len(ctx)
}

#[inline(always)]
pub fn ipv4_flow(ctx: &XdpContext, offset: usize) -> Result<Flow<[u8; 4]>, Unroutable<[u8; 4]>> {
    let ip: *const Ipv4Hdr = ptr_at(ctx, offset).ok_or(Unroutable::Malformed)?;
    // SAFETY: ptr_at checked that the header lies within the frame; Ipv4Hdr has alignment 1.
    let ip = unsafe { &*ip };
    let header_len = usize::from(ip.vihl & 0x0f) * 4;
    let total_len = usize::from(u16::from_be_bytes(ip.tot_len));
    if ip.vihl >> 4 != IPV4_VERSION
        || header_len < IPV4_MIN_HEADER_LEN
        || total_len < header_len
        || !fits_frame(ctx, offset, total_len)
    {
        return Err(Unroutable::Malformed);
    }
    let daddr = ip.dst_addr;
    let frags = u16::from_be_bytes(ip.frags);
    let l4_len = match ip.proto {
        IPPROTO_TCP => TcpHdr::LEN,
        IPPROTO_UDP => UdpHdr::LEN,
        // A fragment of an ICMP message is no message to answer or relay.
        IPPROTO_ICMP if frags & IPV4_MF_AND_OFFSET == 0 => {
            return Err(Unroutable::Icmp {
                daddr,
                l4_offset: offset + header_len,
                l4_len: total_len - header_len,
            });
        }
        _ => return Err(Unroutable::NotBalanced { daddr }),
    };
    // The id is read whatever the packet: an `Option` built only on the fragment's branch
    // leaves the whole packet's payload undefined, which the compiler may then spill from a
    // register the verifier knows to be uninitialised.
    let id = [ip.id[0], ip.id[1], 0, 0];
    let mut first_fragment_id = None;
    if frags & IPV4_MF_AND_OFFSET != 0 {
        if frags & IPV4_OFFSET_MASK != 0 {
            return Err(Unroutable::Fragment {
                daddr,
                key: Fragment {
                    saddr: ip.src_addr,
                    daddr,
                    id,
                    protocol: ip.proto,
                },
            });
        }
        first_fragment_id = Some(id);
    }
    if header_len + l4_len > total_len {
        return Err(Unroutable::Truncated { daddr });
    }
    let (sport, dport) = ports(ctx, offset + header_len).ok_or(Unroutable::Truncated { daddr })?;
    Ok(Flow {
        saddr: ip.src_addr,
        daddr,
        sport,
        dport,
        protocol: ip.proto,
        l4_offset: offset + header_len,
        // total_len >= header_len was checked above, and both fit u16.
        l4_len: (total_len - header_len) as u16,
        first_fragment_id,
    })
}

/// TCP's and UDP's source and destination ports (host order), which both headers start with.
#[inline(always)]
fn ports(ctx: &XdpContext, l4_offset: usize) -> Option<(u16, u16)> {
    let ports: *const [u8; 4] = ptr_at(ctx, l4_offset)?;
    // SAFETY: ptr_at checked the bounds; alignment 1.
    let ports = unsafe { *ports };
    Some((
        u16::from_be_bytes([ports[0], ports[1]]),
        u16::from_be_bytes([ports[2], ports[3]]),
    ))
}

/// An IPv6 packet's flow: the fixed header, then a bounded walk of extension headers
/// (hop-by-hop, routing, destination options, fragment; at most
/// [`MAX_IPV6_EXTENSION_HEADERS`]) to TCP, UDP or ICMPv6. The frame is never changed here.
#[inline(always)]
pub fn ipv6_flow(ctx: &XdpContext, offset: usize) -> Result<Flow<Ipv6>, Unroutable<Ipv6>> {
    let ip: *const Ipv6Hdr = ptr_at(ctx, offset).ok_or(Unroutable::Malformed)?;
    // SAFETY: ptr_at checked that the header lies within the frame; Ipv6Hdr has alignment 1.
    let ip = unsafe { &*ip };
    let payload_len = usize::from(u16::from_be_bytes(ip.payload_len));
    if ip.vcf[0] >> 4 != IPV6_VERSION || !fits_frame(ctx, offset, Ipv6Hdr::LEN + payload_len) {
        return Err(Unroutable::Malformed);
    }
    // IPv4 VIPs are keyed by their IPv4-mapped form: a packet to `::ffff:a.b.c.d` would find
    // the IPv4 service. Such addresses never belong on the wire (RFC 4291 2.5.5.2).
    if is_ipv4_mapped(&ip.dst_addr) {
        return Err(Unroutable::Malformed);
    }
    let daddr = ipv6(&ip.dst_addr);
    let saddr = ipv6(&ip.src_addr);
    let packet_end = offset + Ipv6Hdr::LEN + payload_len;
    let mut next = ip.next_hdr;
    let mut at = offset + Ipv6Hdr::LEN;
    let mut first_fragment_id = None;
    let mut is_fragment = false;
    for _ in 0..MAX_IPV6_EXTENSION_HEADERS {
        if !matches!(
            next,
            IPV6_HOP_BY_HOP | IPV6_ROUTING | IPV6_FRAGMENT | IPV6_DESTINATION_OPTIONS
        ) {
            break;
        }
        // Every extension header is at least 8 bytes and starts with the next header and
        // (but for the fragment header) its length.
        if at > MAX_HEADER_OFFSET || at + IPV6_EXTENSION_UNIT > packet_end {
            return Err(Unroutable::Truncated { daddr });
        }
        let header: *const [u8; IPV6_FRAGMENT_HEADER_LEN] =
            ptr_at(ctx, at & MAX_HEADER_OFFSET).ok_or(Unroutable::Truncated { daddr })?;
        // SAFETY: ptr_at checked the bounds; alignment 1.
        let header = unsafe { *header };
        // Segments left: the VIP is a waypoint, not the packet's destination. Not a
        // service's packet: the VIP's holder (the director's stack, if it has the address)
        // decides what to do with it. (Left by `break`, as "no next header": an early return
        // here made LLVM return the caller's result pointer, which the verifier refuses.)
        if next == IPV6_ROUTING && header[IPV6_ROUTING_SEGMENTS_LEFT_AT] != 0 {
            next = IPV6_NO_NEXT_HEADER;
            break;
        }
        if next == IPV6_FRAGMENT {
            let field = u16::from_be_bytes([header[2], header[3]]);
            let id = [header[4], header[5], header[6], header[7]];
            if field & IPV6_FRAGMENT_OFFSET_MASK != 0 {
                // A later fragment: what follows is the datagram's data, not a header.
                return Err(match header[0] {
                    IPPROTO_TCP | IPPROTO_UDP => Unroutable::Fragment {
                        daddr,
                        key: Fragment {
                            saddr,
                            daddr,
                            id,
                            protocol: header[0],
                        },
                    },
                    _ => Unroutable::NotBalanced { daddr },
                });
            }
            // Offset 0 without "more fragments" (an atomic fragment) is a whole packet.
            is_fragment = field & IPV6_FRAGMENT_MORE != 0;
            if is_fragment {
                first_fragment_id = Some(id);
            }
            at += IPV6_FRAGMENT_HEADER_LEN;
        } else {
            at += (usize::from(header[1]) + 1) * IPV6_EXTENSION_UNIT;
        }
        next = header[0];
    }
    if at > MAX_HEADER_OFFSET || at > packet_end {
        return Err(Unroutable::Truncated { daddr });
    }
    let l4_min = match next {
        IPPROTO_TCP => TcpHdr::LEN,
        IPPROTO_UDP => UdpHdr::LEN,
        // A fragment of an ICMPv6 message is no message to answer or relay.
        IPPROTO_ICMPV6 if !is_fragment => {
            return Err(Unroutable::Icmp {
                daddr,
                l4_offset: at,
                l4_len: packet_end - at,
            });
        }
        // Still an extension header after the bound: not walked further, never forwarded.
        IPV6_HOP_BY_HOP | IPV6_ROUTING | IPV6_FRAGMENT | IPV6_DESTINATION_OPTIONS => {
            return Err(Unroutable::Truncated { daddr });
        }
        _ => return Err(Unroutable::NotBalanced { daddr }),
    };
    if at + l4_min > packet_end {
        return Err(Unroutable::Truncated { daddr });
    }
    let (sport, dport) =
        ports(ctx, at & MAX_HEADER_OFFSET).ok_or(Unroutable::Truncated { daddr })?;
    Ok(Flow {
        saddr,
        daddr,
        sport,
        dport,
        protocol: next,
        l4_offset: at,
        // at <= packet_end and the difference is at most the payload length, a u16.
        l4_len: (packet_end - at) as u16,
        first_fragment_id,
    })
}
