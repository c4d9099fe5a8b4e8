//! Gratuitous announcements: tell the link that a VIP is at the director's MAC, so clients and
//! the gateway update their caches at once instead of when their entries expire. An IPv4 VIP
//! is announced with gratuitous ARP, an IPv6 VIP with an unsolicited Neighbor Advertisement
//! (RFC 4861 7.2.6), the IPv6 counterpart.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::{Context as _, Result};
use etherparse::{Icmpv6Type, PacketBuilder, icmpv6::NeighborAdvertisementHeader};

use crate::net::arp;

/// The announcement of `vip` at `mac`, for its family.
pub fn announcement(mac: [u8; 6], vip: IpAddr) -> Result<Vec<u8>> {
    match vip {
        IpAddr::V4(v4) => Ok(arp_announcement(mac, v4)),
        IpAddr::V6(v6) => unsolicited_advertisement(mac, v6),
    }
}

/// An ARP request for the VIP from the VIP, broadcast (the form Linux and keepalived send,
/// which every stack accepts as an update).
#[must_use]
pub fn arp_announcement(mac: [u8; 6], vip: Ipv4Addr) -> Vec<u8> {
    arp::request(mac, vip, vip)
}

/// ff02::1, every node on the link, and its Ethernet group address (RFC 2464: 33:33 and the
/// address's last 32 bits).
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
const ALL_NODES_MAC: [u8; 6] = [0x33, 0x33, 0, 0, 0, 1];
/// Neighbor discovery messages carry hop limit 255; receivers drop others (RFC 4861 7.1.2).
const NDP_HOP_LIMIT: u8 = 255;
/// The target link-layer address option: type 2, length 1 (in 8-byte units).
const OPTION_TARGET_LINK_LAYER_ADDRESS: u8 = 2;
const OPTION_LENGTH_UNITS: u8 = 1;

/// An unsolicited Neighbor Advertisement of `vip` at `mac`: from the VIP to all nodes
/// (ff02::1), hop limit 255, Override set (not Solicited, not Router: receivers replace the
/// MAC they hold), with the target link-layer address option.
pub fn unsolicited_advertisement(mac: [u8; 6], vip: Ipv6Addr) -> Result<Vec<u8>> {
    let mut body = vip.octets().to_vec();
    body.extend_from_slice(&[OPTION_TARGET_LINK_LAYER_ADDRESS, OPTION_LENGTH_UNITS]);
    body.extend_from_slice(&mac);
    let mut frame = Vec::new();
    PacketBuilder::ethernet2(mac, ALL_NODES_MAC)
        .ipv6(vip.octets(), ALL_NODES.octets(), NDP_HOP_LIMIT)
        .icmpv6(Icmpv6Type::NeighborAdvertisement(
            NeighborAdvertisementHeader {
                router: false,
                solicited: false,
                r#override: true,
            },
        ))
        .write(&mut frame, &body)
        .with_context(|| format!("building the neighbour advertisement of {vip} failed"))?;
    Ok(frame)
}

#[cfg(test)]
mod tests {
    use etherparse::{ArpOperation, LinkSlice, NetSlice, SlicedPacket, TransportSlice};

    use super::*;

    const MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];

    #[test]
    fn announcement_is_a_broadcast_arp_request_for_the_vip_from_the_vip() {
        let vip: Ipv4Addr = "198.18.0.100".parse().unwrap();
        let frame = announcement(MAC, IpAddr::V4(vip)).unwrap();
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

    #[test]
    fn an_ipv6_vip_is_announced_by_an_unsolicited_neighbor_advertisement() {
        let vip: Ipv6Addr = "2001:2::100".parse().unwrap();
        let frame = announcement(MAC, IpAddr::V6(vip)).unwrap();
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
        // ICMPv6 header with flags, target, one 8-byte option.
        assert_eq!(header.payload_length(), 8 + 16 + 8);
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
}
