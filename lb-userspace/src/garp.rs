//! Gratuitous ARP: tells the link that a VIP is at the director's MAC, so clients and the
//! gateway update their caches at once instead of when their entries expire.

use std::net::Ipv4Addr;

use etherparse::{ArpEthIpv4Packet, ArpOperation, EtherType, Ethernet2Header};

const BROADCAST_MAC: [u8; 6] = [0xff; 6];
const UNKNOWN_MAC: [u8; 6] = [0; 6];

/// The announcement of `vip` at `mac`: an ARP request for the VIP from the VIP, broadcast (the
/// form Linux and keepalived send, which every stack accepts as an update).
#[must_use]
pub fn announcement(mac: [u8; 6], vip: Ipv4Addr) -> Vec<u8> {
    let ethernet = Ethernet2Header {
        source: mac,
        destination: BROADCAST_MAC,
        ether_type: EtherType::ARP,
    };
    let arp = ArpEthIpv4Packet {
        operation: ArpOperation::REQUEST,
        sender_mac: mac,
        sender_ipv4: vip.octets(),
        target_mac: UNKNOWN_MAC,
        target_ipv4: vip.octets(),
    };
    let mut frame = ethernet.to_bytes().to_vec();
    frame.extend_from_slice(&arp.to_bytes());
    frame
}

#[cfg(test)]
mod tests {
    use etherparse::{LinkSlice, NetSlice, SlicedPacket};

    use super::*;

    #[test]
    fn announcement_is_a_broadcast_arp_request_for_the_vip_from_the_vip() {
        let mac = [0x02, 0, 0, 0, 0, 0x02];
        let vip: Ipv4Addr = "198.18.0.100".parse().unwrap();
        let frame = announcement(mac, vip);
        let packet = SlicedPacket::from_ethernet(&frame).unwrap();
        let Some(LinkSlice::Ethernet2(eth)) = packet.link else {
            panic!("not Ethernet II")
        };
        assert_eq!(eth.destination(), BROADCAST_MAC);
        assert_eq!(eth.source(), mac);
        let Some(NetSlice::Arp(arp)) = packet.net else {
            panic!("not ARP")
        };
        let arp = arp.to_packet().try_eth_ipv4().unwrap();
        assert_eq!(arp.operation, ArpOperation::REQUEST);
        assert_eq!(
            (arp.sender_mac, arp.sender_ipv4, arp.target_ipv4),
            (mac, vip.octets(), vip.octets())
        );
    }
}
