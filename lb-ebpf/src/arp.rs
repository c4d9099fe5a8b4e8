//! Answering ARP for the VIPs: the real servers hold the VIP too but are set not to answer
//! (arp_ignore), so the director is the one host on the link that does, and the gateway and
//! clients send VIP traffic to its MAC.

use aya_ebpf::programs::XdpContext;
use lb_common::{VIP_FLAG_ACTIVE, VIP_FLAG_LOCAL, Verdict};
use network_types::{arp::ArpHdr, eth::EthHdr};

use crate::{
    forward::{BROADCAST_MAC, MAC_GROUP_BIT},
    maps::{interface, vip_flags},
    parse::ptr_at,
};

const ARP_HTYPE_ETHERNET: u16 = 1;
const ARP_PTYPE_IPV4: u16 = 0x0800;
const ARP_HLEN_ETHERNET: u8 = 6;
const ARP_PLEN_IPV4: u8 = 4;
pub const ARP_OP_REQUEST: u16 = 1;
pub const ARP_OP_REPLY: u16 = 2;

/// Turns an ARP request for an active VIP into the reply, in place (so a tagged request's
/// reply keeps its tag); anything else passes. `vlan`: the frame's VLAN (see `parse`).
#[inline(always)]
pub fn answer_request(ctx: &XdpContext, offset: usize, vlan: u16) -> Verdict {
    let (Some(eth), Some(arp)) = (ptr_at::<EthHdr>(ctx, 0), ptr_at::<ArpHdr>(ctx, offset)) else {
        return Verdict::Pass; // not a complete Ethernet/IPv4 ARP packet: the stack decides
    };
    // SAFETY: ptr_at checked the bounds of both headers; all their fields have alignment 1
    // except ether_type, which is not touched.
    let (eth, arp) = unsafe { (&mut *eth, &mut *arp) };
    if !is_ipv4_request(arp) {
        return Verdict::Pass;
    }
    let requester_mac = arp.sha;
    let requester_ip = arp.spa;
    let vip = arp.tpa;
    let Some(flags) = vip_flags(vip) else {
        return Verdict::Pass;
    };
    // A standby whose kernel holds the VIP must not let the kernel answer for it: it would
    // draw the VIP's traffic, which a standby drops. Every request for it stops here.
    if flags & VIP_FLAG_ACTIVE == 0 {
        return if flags & VIP_FLAG_LOCAL != 0 {
            Verdict::DropArpStandby
        } else {
            Verdict::Pass
        };
    }
    // An announcement for the VIP by another host (sender IP = target IP) is a conflict, not a
    // question: never answered. Nor is a request from a group MAC, which would make the reply
    // a broadcast.
    if requester_ip == vip || requester_mac[0] & MAC_GROUP_BIT != 0 {
        return Verdict::Pass;
    }
    // Untagged on a trunk, or on a VLAN not configured: not ours to answer.
    let Some(interface) = interface(ctx.ingress_ifindex() as u32, vlan) else {
        return Verdict::Pass;
    };
    // A request sent to another host's MAC (seen in promiscuous mode, or flooded) is not ours
    // to answer: only broadcast ones and those sent to us.
    if eth.dst_addr != BROADCAST_MAC && eth.dst_addr != interface.mac {
        return Verdict::Pass;
    }
    eth.dst_addr = requester_mac;
    eth.src_addr = interface.mac;
    arp.oper = ARP_OP_REPLY.to_be_bytes();
    arp.tha = requester_mac;
    arp.tpa = requester_ip;
    arp.sha = interface.mac;
    arp.spa = vip;
    Verdict::ArpReply
}

#[inline(always)]
fn is_ipv4_request(arp: &ArpHdr) -> bool {
    is_ethernet_ipv4(arp) && u16::from_be_bytes(arp.oper) == ARP_OP_REQUEST
}

/// ARP for IPv4 over Ethernet, the only kind the director answers or watches.
#[inline(always)]
pub fn is_ethernet_ipv4(arp: &ArpHdr) -> bool {
    u16::from_be_bytes(arp.htype) == ARP_HTYPE_ETHERNET
        && u16::from_be_bytes(arp.ptype) == ARP_PTYPE_IPV4
        && arp.hlen == ARP_HLEN_ETHERNET
        && arp.plen == ARP_PLEN_IPV4
}
