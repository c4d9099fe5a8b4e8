//! Asking the link who answers for an address, as `arping` does: ARP request frames and a
//! packet socket that sends them and reads the replies (bounded in time). Used by the daemon's
//! periodic VIP probe (conflict.rs) and by `drlb doctor`.

use std::{
    io, mem,
    net::Ipv4Addr,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use etherparse::{ArpEthIpv4Packet, ArpOperation, EtherType, Ethernet2Header, SlicedPacket};

const BROADCAST_MAC: [u8; 6] = [0xff; 6];
const UNKNOWN_MAC: [u8; 6] = [0; 6];

/// "Who has `target`? Tell `sender_ip`", broadcast from `sender_mac`. A host answering it
/// claims `target` for its MAC. A probe's `sender_ip` is the director's own address, never the
/// VIP, which would teach every host on the link the director's MAC for it as a side effect;
/// that is what a gratuitous announcement (`garp::announcement`) does on purpose.
#[must_use]
pub fn request(sender_mac: [u8; 6], sender_ip: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    let ethernet = Ethernet2Header {
        source: sender_mac,
        destination: BROADCAST_MAC,
        ether_type: EtherType::ARP,
    };
    let arp = ArpEthIpv4Packet {
        operation: ArpOperation::REQUEST,
        sender_mac,
        sender_ipv4: sender_ip.octets(),
        target_mac: UNKNOWN_MAC,
        target_ipv4: target.octets(),
    };
    let mut frame = ethernet.to_bytes().to_vec();
    frame.extend_from_slice(&arp.to_bytes());
    frame
}

/// An ARP reply as received: who claims which address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reply {
    pub sender_mac: [u8; 6],
    pub sender_ip: Ipv4Addr,
}

/// The sender of an Ethernet/IPv4 ARP reply (any VLAN tags looked through); `None` for
/// anything else.
#[must_use]
pub fn parse_reply(frame: &[u8]) -> Option<Reply> {
    let packet = SlicedPacket::from_ethernet(frame).ok()?;
    let Some(etherparse::NetSlice::Arp(arp)) = packet.net else {
        return None;
    };
    let arp = arp.to_packet().try_eth_ipv4().ok()?;
    (arp.operation == ArpOperation::REPLY).then(|| Reply {
        sender_mac: arp.sender_mac,
        sender_ip: Ipv4Addr::from(arp.sender_ipv4),
    })
}

/// A packet socket on one interface: sends whole frames and, when opened with
/// [`ArpSocket::open`], receives the ARP frames that arrive on the interface (not those this
/// host sends).
pub struct ArpSocket {
    fd: OwnedFd,
    ifindex: u32,
}

impl ArpSocket {
    /// A socket that only sends: it queues nothing, so a long-lived one costs no memory.
    /// [`ArpSocket::send`] uses `ifindex`, [`ArpSocket::send_on`] any interface.
    pub fn sender(ifindex: u32) -> Result<Self> {
        // SAFETY: plain socket(2) call; the result is checked before use. Protocol 0: no frame
        // is ever delivered to this socket.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error())
                .context("could not open a packet socket to send ARP (needs root)");
        }
        // SAFETY: fd is a freshly created descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Self { fd, ifindex })
    }

    /// A socket that sends and receives the ARP frames arriving on `ifindex`.
    pub fn open(ifindex: u32) -> Result<Self> {
        Self::open_for(ifindex, libc::ETH_P_ARP as u16)
    }

    /// A socket that sends and receives the frames of `ether_type` arriving on `ifindex`
    /// (`ETH_P_IPV6`: for neighbour discovery probes, see `ndp_probe`).
    pub fn open_for(ifindex: u32, ether_type: u16) -> Result<Self> {
        let protocol = ether_type.to_be();
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
                .context("could not open a packet socket for ARP (needs root)");
        }
        // SAFETY: fd is a freshly created descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut addr = link_address(ifindex);
        addr.sll_protocol = protocol;
        // SAFETY: addr is a valid sockaddr_ll of the length passed.
        let bound = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&raw const addr).cast(),
                mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if bound != 0 {
            return Err(io::Error::last_os_error())
                .with_context(|| format!("could not bind a packet socket to ifindex {ifindex}"));
        }
        Ok(Self { fd, ifindex })
    }

    /// Sends `frame` out of the interface the socket was opened for.
    pub fn send(&self, frame: &[u8]) -> Result<()> {
        self.send_on(self.ifindex, frame)
    }

    /// Sends `frame` out of `ifindex` (a socket from [`ArpSocket::sender`] serves every
    /// interface).
    pub fn send_on(&self, ifindex: u32, frame: &[u8]) -> Result<()> {
        let mut addr = link_address(ifindex);
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
            return Err(io::Error::last_os_error()).context("sending an ARP frame failed");
        }
        Ok(())
    }

    /// The ARP replies that arrive until `deadline`, and those queued already when it has
    /// passed (blocking; for a CLI, not the daemon's loop).
    pub fn replies_until(&self, deadline: Instant) -> Result<Vec<Reply>> {
        self.frames_until(deadline, parse_reply)
    }

    /// What `parse` makes of the frames that arrive until `deadline`, and of those queued
    /// already when it has passed (blocking; for a CLI, not the daemon's loop).
    pub fn frames_until<T>(
        &self,
        deadline: Instant,
        parse: impl Fn(&[u8]) -> Option<T>,
    ) -> Result<Vec<T>> {
        let mut replies = Vec::new();
        let mut buf = [0u8; 2048];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if !self.wait_readable(left)? {
                if Instant::now() >= deadline {
                    return Ok(replies);
                }
                continue;
            }
            // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
            let mut from: libc::sockaddr_ll = unsafe { mem::zeroed() };
            let mut from_len = mem::size_of::<libc::sockaddr_ll>() as u32;
            // SAFETY: buf and from are valid for the lengths passed.
            let n = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                    (&raw mut from).cast(),
                    &raw mut from_len,
                )
            };
            if n < 0 {
                let error = io::Error::last_os_error();
                if error.kind() == io::ErrorKind::WouldBlock
                    || error.kind() == io::ErrorKind::Interrupted
                {
                    continue;
                }
                return Err(error).context("reading ARP frames failed");
            }
            if from.sll_pkttype == libc::PACKET_OUTGOING {
                continue; // our own request
            }
            if let Some(reply) = parse(&buf[..n as usize]) {
                replies.push(reply);
            }
        }
    }

    fn wait_readable(&self, timeout: Duration) -> Result<bool> {
        let mut poll = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let millis = i32::try_from(timeout.as_millis().max(1)).unwrap_or(i32::MAX);
        // SAFETY: one valid pollfd.
        let ready = unsafe { libc::poll(&raw mut poll, 1, millis) };
        if ready < 0 {
            let error = io::Error::last_os_error();
            if error.kind() == io::ErrorKind::Interrupted {
                return Ok(false);
            }
            return Err(error).context("waiting for ARP frames failed");
        }
        Ok(ready > 0)
    }
}

fn link_address(ifindex: u32) -> libc::sockaddr_ll {
    // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
    let mut addr: libc::sockaddr_ll = unsafe { mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_ifindex = ifindex as i32;
    addr
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIRECTOR_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
    const RS_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x11];

    fn reply(sender_mac: [u8; 6], sender_ip: Ipv4Addr, to: [u8; 6], to_ip: Ipv4Addr) -> Vec<u8> {
        let mut frame = Ethernet2Header {
            source: sender_mac,
            destination: to,
            ether_type: EtherType::ARP,
        }
        .to_bytes()
        .to_vec();
        frame.extend_from_slice(
            &ArpEthIpv4Packet {
                operation: ArpOperation::REPLY,
                sender_mac,
                sender_ipv4: sender_ip.octets(),
                target_mac: to,
                target_ipv4: to_ip.octets(),
            }
            .to_bytes(),
        );
        frame
    }

    #[test]
    fn a_request_asks_for_the_target_from_the_senders_own_address() {
        let (me, vip) = (Ipv4Addr::new(198, 18, 0, 2), Ipv4Addr::new(198, 18, 0, 100));
        let frame = request(DIRECTOR_MAC, me, vip);
        let packet = SlicedPacket::from_ethernet(&frame).unwrap();
        let Some(etherparse::LinkSlice::Ethernet2(eth)) = packet.link else {
            panic!("not Ethernet II")
        };
        assert_eq!(
            (eth.destination(), eth.source()),
            (BROADCAST_MAC, DIRECTOR_MAC)
        );
        let Some(etherparse::NetSlice::Arp(arp)) = packet.net else {
            panic!("not ARP")
        };
        let arp = arp.to_packet().try_eth_ipv4().unwrap();
        assert_eq!(arp.operation, ArpOperation::REQUEST);
        assert_eq!(
            (arp.sender_ipv4, arp.target_ipv4),
            (me.octets(), vip.octets())
        );
        assert_eq!(parse_reply(&frame), None, "a request is not a reply");
    }

    #[test]
    fn replies_name_who_claims_which_address() {
        let vip = Ipv4Addr::new(198, 18, 0, 100);
        let frame = reply(RS_MAC, vip, DIRECTOR_MAC, Ipv4Addr::new(198, 18, 0, 2));
        assert_eq!(
            parse_reply(&frame),
            Some(Reply {
                sender_mac: RS_MAC,
                sender_ip: vip
            })
        );
        assert_eq!(parse_reply(&frame[..20]), None, "truncated");
    }
}
