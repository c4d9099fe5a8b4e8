//! Header parsing. [`ptr_at`] is the only place that compares against `data_end`; everything
//! else asks it for a header at an offset and gets `None` when the frame is too short.

use core::mem::size_of;

use aya_ebpf::{helpers::bpf_xdp_get_buff_len, programs::XdpContext};
use lb_common::{
    FragmentKey, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, NO_VLAN, VLAN_VID_MASK, Verdict,
};
use network_types::{
    eth::{EthHdr, EtherType},
    ip::Ipv4Hdr,
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

/// The fields of an IPv4 packet that select its service and backend, in host order.
pub struct Flow {
    /// Destination address as on the wire, for map keys.
    pub daddr_octets: [u8; 4],
    pub saddr: u32,
    pub daddr: u32,
    pub sport: u16,
    pub dport: u16,
    pub protocol: u8,
    /// Where the TCP/UDP header starts in the frame, and its length with the payload.
    pub l4_offset: usize,
    pub l4_len: u16,
    /// A first fragment (MF set, offset 0): its datagram's IP id as on the wire, so the later
    /// fragments can be sent where it went; `None` for a whole packet.
    pub first_fragment_id: Option<u16>,
}

impl Flow {
    /// The key of the datagram this first fragment begins.
    #[inline(always)]
    pub fn fragment_key(&self, id_be: u16) -> FragmentKey {
        FragmentKey {
            saddr: self.saddr.to_be_bytes(),
            daddr: self.daddr_octets,
            id_be,
            protocol: self.protocol,
            _pad: 0,
        }
    }
}

/// Why an IPv4 packet has no [`Flow`].
pub enum Unroutable {
    /// Not TCP or UDP: never balanced (to a VIP: the stack's, or dropped; see `main.rs`).
    NotBalanced { daddr: [u8; 4] },
    /// A later fragment (offset > 0) of a TCP/UDP datagram: the ports are not in this packet.
    Fragment { daddr: [u8; 4], key: FragmentKey },
    /// A whole ICMP packet (not a fragment); its header starts at `l4_offset`, `l4_len` bytes
    /// with the payload.
    Icmp {
        daddr: [u8; 4],
        l4_offset: usize,
        l4_len: usize,
    },
    /// The IPv4 header is fine but the TCP/UDP header is cut short.
    Truncated { daddr: [u8; 4] },
    /// The IPv4 header itself is cut short or inconsistent.
    Malformed,
}

#[inline(always)]
pub fn ipv4_flow(ctx: &XdpContext, offset: usize) -> Result<Flow, Unroutable> {
    let ip: *const Ipv4Hdr = ptr_at(ctx, offset).ok_or(Unroutable::Malformed)?;
    // SAFETY: ptr_at checked that the header lies within the frame; Ipv4Hdr has alignment 1.
    let ip = unsafe { &*ip };
    let header_len = usize::from(ip.vihl & 0x0f) * 4;
    let total_len = usize::from(u16::from_be_bytes(ip.tot_len));
    // Ethernet padding may make the frame longer than the packet, never shorter. The whole
    // length of a multi-buffer frame is asked for only when the first buffer is too short.
    if ip.vihl >> 4 != IPV4_VERSION
        || header_len < IPV4_MIN_HEADER_LEN
        || total_len < header_len
        || (offset + total_len > ctx.data_end() - ctx.data() && offset + total_len > frame_len(ctx))
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
    let mut first_fragment_id = None;
    if frags & IPV4_MF_AND_OFFSET != 0 {
        let id_be = u16::from_ne_bytes(ip.id);
        if frags & IPV4_OFFSET_MASK != 0 {
            return Err(Unroutable::Fragment {
                daddr,
                key: FragmentKey {
                    saddr: ip.src_addr,
                    daddr,
                    id_be,
                    protocol: ip.proto,
                    _pad: 0,
                },
            });
        }
        first_fragment_id = Some(id_be);
    }
    if header_len + l4_len > total_len {
        return Err(Unroutable::Truncated { daddr });
    }
    // TCP and UDP both start with the source and destination ports.
    let ports: *const [u8; 4] =
        ptr_at(ctx, offset + header_len).ok_or(Unroutable::Truncated { daddr })?;
    // SAFETY: as above.
    let ports = unsafe { *ports };
    Ok(Flow {
        daddr_octets: daddr,
        saddr: u32::from_be_bytes(ip.src_addr),
        daddr: u32::from_be_bytes(daddr),
        sport: u16::from_be_bytes([ports[0], ports[1]]),
        dport: u16::from_be_bytes([ports[2], ports[3]]),
        protocol: ip.proto,
        l4_offset: offset + header_len,
        // total_len >= header_len was checked above, and both fit u16.
        l4_len: (total_len - header_len) as u16,
        first_fragment_id,
    })
}
