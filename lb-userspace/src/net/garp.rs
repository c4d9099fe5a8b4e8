//! Gratuitous ARP: tells the link that a VIP is at the director's MAC, so clients and the
//! gateway update their caches at once instead of when their entries expire.

use std::net::Ipv4Addr;

use crate::net::arp;

/// The announcement of `vip` at `mac`: an ARP request for the VIP from the VIP, broadcast (the
/// form Linux and keepalived send, which every stack accepts as an update).
#[must_use]
pub fn announcement(mac: [u8; 6], vip: Ipv4Addr) -> Vec<u8> {
    arp::request(mac, vip, vip)
}

#[cfg(test)]
mod tests {
    use etherparse::{ArpOperation, LinkSlice, NetSlice, SlicedPacket};

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
        assert_eq!(eth.destination(), [0xff; 6]);
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
