//! Gratuitous announcements: tell the link that a VIP is at the director's MAC, so clients and
//! the gateway update their caches at once instead of when their entries expire. An IPv4 VIP
//! is announced with gratuitous ARP, an IPv6 VIP with an unsolicited Neighbor Advertisement
//! (RFC 4861 7.2.6), the IPv6 counterpart.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::net::arp;

/// The announcement of `vip` at `mac`, for its family.
#[must_use]
pub fn announcement(mac: [u8; 6], vip: IpAddr) -> Vec<u8> {
    match vip {
        IpAddr::V4(v4) => arp_announcement(mac, v4),
        IpAddr::V6(v6) => unsolicited_advertisement(mac, v6),
    }
}

/// An ARP request for the VIP from the VIP, broadcast (the form Linux and keepalived send,
/// which every stack accepts as an update).
#[must_use]
pub fn arp_announcement(mac: [u8; 6], vip: Ipv4Addr) -> Vec<u8> {
    arp::request(mac, vip, vip)
}

/// Ethernet type of IPv6.
const ETHERTYPE_IPV6: u16 = 0x86dd;
/// ff02::1, every node on the link, and its Ethernet group address (RFC 2464: 33:33 and the
/// address's last 32 bits).
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
const ALL_NODES_MAC: [u8; 6] = [0x33, 0x33, 0, 0, 0, 1];
/// Neighbor discovery messages carry hop limit 255; receivers drop others (RFC 4861 7.1.2).
const NDP_HOP_LIMIT: u8 = 255;
const ICMPV6_NEIGHBOR_ADVERTISEMENT: u8 = 136;
/// The Override flag of the advertisement's flags byte (Router 0x80, Solicited 0x40): an
/// unsolicited advertisement sets Override alone, so receivers replace the MAC they hold.
const NA_FLAG_OVERRIDE: u8 = 0x20;
/// The target link-layer address option: type 2, length 1 (in 8-byte units).
const OPTION_TARGET_LINK_LAYER_ADDRESS: u8 = 2;
const OPTION_LENGTH_UNITS: u8 = 1;
/// Header lengths: Ethernet II, IPv6, and the advertisement (ICMPv6 header with flags, target,
/// one 8-byte option).
const ETHERNET_LEN: usize = 14;
const IPV6_HEADER_LEN: usize = 40;
const NA_LEN: usize = 8 + 16 + 8;

/// An unsolicited Neighbor Advertisement of `vip` at `mac`: from the VIP to all nodes
/// (ff02::1), hop limit 255, Override set (not Solicited, not Router), with the target
/// link-layer address option.
#[must_use]
pub fn unsolicited_advertisement(mac: [u8; 6], vip: Ipv6Addr) -> Vec<u8> {
    let mut frame = Vec::with_capacity(ETHERNET_LEN + IPV6_HEADER_LEN + NA_LEN);
    frame.extend_from_slice(&ALL_NODES_MAC);
    frame.extend_from_slice(&mac);
    frame.extend_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
    // Version 6, traffic class 0, flow label 0.
    frame.extend_from_slice(&[0x60, 0, 0, 0]);
    frame.extend_from_slice(&u16::try_from(NA_LEN).unwrap_or(u16::MAX).to_be_bytes());
    frame.push(lb_common::IPPROTO_ICMPV6);
    frame.push(NDP_HOP_LIMIT);
    frame.extend_from_slice(&vip.octets());
    frame.extend_from_slice(&ALL_NODES.octets());
    let mut message = Vec::with_capacity(NA_LEN);
    message.extend_from_slice(&[ICMPV6_NEIGHBOR_ADVERTISEMENT, 0, 0, 0]);
    message.extend_from_slice(&[NA_FLAG_OVERRIDE, 0, 0, 0]);
    message.extend_from_slice(&vip.octets());
    message.extend_from_slice(&[OPTION_TARGET_LINK_LAYER_ADDRESS, OPTION_LENGTH_UNITS]);
    message.extend_from_slice(&mac);
    let checksum = icmpv6_checksum(vip, ALL_NODES, &message);
    message[2..4].copy_from_slice(&checksum.to_be_bytes());
    frame.extend_from_slice(&message);
    frame
}

/// The ICMPv6 checksum of `message` (its checksum field zero) from `source` to `destination`:
/// the ones' complement of the ones' complement sum over the pseudo-header (RFC 8200 8.1) and
/// the message.
fn icmpv6_checksum(source: Ipv6Addr, destination: Ipv6Addr, message: &[u8]) -> u16 {
    let length = u32::try_from(message.len()).unwrap_or(u32::MAX);
    let mut pseudo = Vec::with_capacity(40);
    pseudo.extend_from_slice(&source.octets());
    pseudo.extend_from_slice(&destination.octets());
    pseudo.extend_from_slice(&length.to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, lb_common::IPPROTO_ICMPV6]);
    let mut sum: u32 = 0;
    for chunk in pseudo.chunks(2).chain(message.chunks(2)) {
        let word = u16::from_be_bytes([chunk[0], chunk.get(1).copied().unwrap_or(0)]);
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !u16::try_from(sum).unwrap_or(u16::MAX)
}

#[cfg(test)]
mod tests {
    use etherparse::{ArpOperation, Icmpv6Type, LinkSlice, NetSlice, SlicedPacket, TransportSlice};

    use super::*;

    const MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];

    #[test]
    fn announcement_is_a_broadcast_arp_request_for_the_vip_from_the_vip() {
        let vip: Ipv4Addr = "198.18.0.100".parse().unwrap();
        let frame = announcement(MAC, IpAddr::V4(vip));
        let packet = SlicedPacket::from_ethernet(&frame).unwrap();
        let Some(LinkSlice::Ethernet2(eth)) = packet.link else {
            panic!("not Ethernet II")
        };
        assert_eq!(eth.destination(), [0xff; 6]);
        assert_eq!(eth.source(), MAC);
        let Some(NetSlice::Arp(arp)) = packet.net else {
            panic!("not ARP")
        };
        let arp = arp.to_packet().try_eth_ipv4().unwrap();
        assert_eq!(arp.operation, ArpOperation::REQUEST);
        assert_eq!(
            (arp.sender_mac, arp.sender_ipv4, arp.target_ipv4),
            (MAC, vip.octets(), vip.octets())
        );
    }

    /// Parsed and its checksum recomputed by etherparse, independently of `icmpv6_checksum`.
    #[test]
    fn an_ipv6_vip_is_announced_by_an_unsolicited_neighbor_advertisement() {
        let vip: Ipv6Addr = "2001:2::100".parse().unwrap();
        let frame = announcement(MAC, IpAddr::V6(vip));
        let packet = SlicedPacket::from_ethernet(&frame).unwrap();
        let Some(LinkSlice::Ethernet2(eth)) = &packet.link else {
            panic!("not Ethernet II")
        };
        assert_eq!(
            (eth.destination(), eth.source()),
            ([0x33, 0x33, 0, 0, 0, 1], MAC)
        );
        let Some(NetSlice::Ipv6(ip)) = &packet.net else {
            panic!("not IPv6")
        };
        let header = ip.header();
        assert_eq!(header.hop_limit(), 255);
        assert_eq!(header.source_addr(), vip);
        assert_eq!(
            header.destination_addr(),
            "ff02::1".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(usize::from(header.payload_length()), NA_LEN);
        let Some(TransportSlice::Icmpv6(icmp)) = &packet.transport else {
            panic!("not ICMPv6")
        };
        let Icmpv6Type::NeighborAdvertisement(na) = icmp.icmp_type() else {
            panic!("not a neighbor advertisement: {:?}", icmp.icmp_type())
        };
        assert!(na.r#override && !na.solicited && !na.router);
        let expected = icmp
            .icmp_type()
            .calc_checksum(
                vip.octets(),
                [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
                icmp.payload(),
            )
            .unwrap();
        assert_eq!(icmp.checksum(), expected);
        // The target, then the target link-layer address option: type 2, 8 bytes, our MAC.
        let mut body = vip.octets().to_vec();
        body.extend_from_slice(&[2, 1]);
        body.extend_from_slice(&MAC);
        assert_eq!(icmp.payload(), body.as_slice());
        assert_eq!(frame.len(), 14 + 40 + 32);
    }

    #[test]
    fn the_checksum_sums_to_all_ones_over_the_whole_message() {
        let vip: Ipv6Addr = "2001:2::100".parse().unwrap();
        let frame = unsolicited_advertisement(MAC, vip);
        let message = &frame[ETHERNET_LEN + IPV6_HEADER_LEN..];
        // With its checksum in place, the message's checksum is 0 (sum of all ones).
        assert_eq!(icmpv6_checksum(vip, ALL_NODES, message), 0);
    }
}
