//! Gratuitous ARP: tells the link that a VIP is at the director's MAC, so clients and the
//! gateway update their caches at once instead of when their entries expire.

use std::{
    io, mem,
    net::Ipv4Addr,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

use anyhow::{Context as _, Result};
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

/// A raw packet socket bound to one interface, for sending whole Ethernet frames.
pub struct FrameSender {
    fd: OwnedFd,
    ifindex: u32,
}

impl FrameSender {
    pub fn open(ifindex: u32) -> Result<Self> {
        let protocol = (libc::ETH_P_ARP as u16).to_be();
        // SAFETY: plain socket(2) call; the result is checked before use.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                i32::from(protocol),
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error())
                .context("could not open a packet socket to send gratuitous ARP (needs root)");
        }
        // SAFETY: fd is a freshly created, owned descriptor.
        Ok(Self {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            ifindex,
        })
    }

    pub fn send(&self, frame: &[u8]) -> Result<()> {
        // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
        let mut addr: libc::sockaddr_ll = unsafe { mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = self.ifindex as i32;
        addr.sll_halen = 6;
        addr.sll_addr[..6].copy_from_slice(&frame[..6]);
        // SAFETY: frame and addr are valid for the lengths passed.
        let sent = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&raw const addr).cast(),
                mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error())
                .context("sending a gratuitous ARP frame failed");
        }
        Ok(())
    }
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
