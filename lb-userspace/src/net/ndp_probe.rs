//! Asking the link who answers neighbour discovery for an IPv6 address (what `ndisc6` does):
//! Neighbor Solicitation frames and the Neighbor Advertisements that answer them, read on a
//! packet socket ([`super::arp::ArpSocket`] opened for IPv6). Used by `drlb doctor` for IPv6
//! VIPs, as ARP probes are for IPv4 ones.

use std::net::Ipv6Addr;

use anyhow::{Context as _, Result};
use etherparse::{Icmpv6Slice, Icmpv6Type, NetSlice, PacketBuilder, SlicedPacket, TransportSlice};

/// RFC 4861 7.1.1: neighbour discovery messages carry hop limit 255.
const NDP_HOP_LIMIT: u8 = 255;
const OPTION_SOURCE_LLA: u8 = 1;
const OPTION_TARGET_LLA: u8 = 2;
/// An Ethernet link-layer address option: type, length (in 8-byte units), MAC.
const LLA_OPTION_UNITS: u8 = 1;
const OPTION_UNIT: usize = 8;
const TARGET_LEN: usize = 16;
/// The `fe80::/64` prefix of link-local addresses.
const LINK_LOCAL_PREFIX: [u8; 8] = [0xfe, 0x80, 0, 0, 0, 0, 0, 0];
/// EUI-64 (RFC 4291 appendix A): the universal/local bit flipped, `ff:fe` in the middle.
const EUI64_UL_BIT: u8 = 0x02;
const EUI64_FILLER: [u8; 2] = [0xff, 0xfe];

/// The EUI-64 link-local address of `mac`: what Linux gives an interface by default, and the
/// source of the director's probes (answers come back to its MAC, from the option, whether or
/// not the address is assigned).
#[must_use]
pub fn link_local(mac: [u8; 6]) -> Ipv6Addr {
    let mut octets = [0; 16];
    octets[..8].copy_from_slice(&LINK_LOCAL_PREFIX);
    octets[8..11].copy_from_slice(&[mac[0] ^ EUI64_UL_BIT, mac[1], mac[2]]);
    octets[11..13].copy_from_slice(&EUI64_FILLER);
    octets[13..].copy_from_slice(&mac[3..]);
    Ipv6Addr::from(octets)
}

/// The solicited-node multicast group of `addr` (RFC 4291 2.7.1).
#[must_use]
pub fn solicited_node(addr: Ipv6Addr) -> Ipv6Addr {
    let o = addr.octets();
    Ipv6Addr::from([
        0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0xff, o[13], o[14], o[15],
    ])
}

/// "Who has `target`?" from `sender_mac` and `sender_ip` (never the VIP: see
/// `arp::request`), to the target's solicited-node group, with the source link-layer address
/// option.
pub fn solicitation(sender_mac: [u8; 6], sender_ip: Ipv6Addr, target: Ipv6Addr) -> Result<Vec<u8>> {
    let group = solicited_node(target).octets();
    let group_mac = [0x33, 0x33, group[12], group[13], group[14], group[15]];
    let mut payload = target.octets().to_vec();
    payload.extend_from_slice(&[OPTION_SOURCE_LLA, LLA_OPTION_UNITS]);
    payload.extend_from_slice(&sender_mac);
    let mut frame = Vec::new();
    PacketBuilder::ethernet2(sender_mac, group_mac)
        .ipv6(sender_ip.octets(), group, NDP_HOP_LIMIT)
        .icmpv6(Icmpv6Type::NeighborSolicitation)
        .write(&mut frame, &payload)
        .context("building a neighbour solicitation failed")?;
    Ok(frame)
}

/// A Neighbor Advertisement as received: who claims which address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Advert {
    /// The target link-layer address option's MAC, else the frame's source MAC.
    pub mac: [u8; 6],
    pub target: Ipv6Addr,
}

/// The claim of a valid (hop limit 255, checksum right) Neighbor Advertisement in an Ethernet
/// frame (any VLAN tags looked through); `None` for anything else.
#[must_use]
pub fn parse_advert(frame: &[u8]) -> Option<Advert> {
    let packet = SlicedPacket::from_ethernet(frame).ok()?;
    let Some(NetSlice::Ipv6(ip)) = &packet.net else {
        return None;
    };
    let header = ip.header();
    let Some(TransportSlice::Icmpv6(icmp)) = &packet.transport else {
        return None;
    };
    if header.hop_limit() != NDP_HOP_LIMIT
        || !icmp.is_checksum_valid(header.source(), header.destination())
        || !matches!(icmp.icmp_type(), Icmpv6Type::NeighborAdvertisement(_))
    {
        return None;
    }
    let eth_source: [u8; 6] = frame.get(6..12)?.try_into().ok()?;
    let (target, options) = target_and_options(icmp)?;
    let mac = target_lla(options)?.unwrap_or(eth_source);
    Some(Advert { mac, target })
}

fn target_and_options<'a>(icmp: &Icmpv6Slice<'a>) -> Option<(Ipv6Addr, &'a [u8])> {
    let payload = icmp.payload();
    let target: [u8; TARGET_LEN] = payload.get(..TARGET_LEN)?.try_into().ok()?;
    Some((Ipv6Addr::from(target), &payload[TARGET_LEN..]))
}

/// The first target link-layer address option's MAC, if any; `None` when an option has
/// length 0 or runs past the message (the advertisement is invalid).
fn target_lla(mut options: &[u8]) -> Option<Option<[u8; 6]>> {
    let mut found = None;
    while !options.is_empty() {
        let (kind, units) = (options[0], usize::from(*options.get(1)?));
        let len = units * OPTION_UNIT;
        if units == 0 || len > options.len() {
            return None;
        }
        if found.is_none() && kind == OPTION_TARGET_LLA && units == usize::from(LLA_OPTION_UNITS) {
            let mut mac = [0; 6];
            mac.copy_from_slice(&options[2..OPTION_UNIT]);
            found = Some(mac);
        }
        options = &options[len..];
    }
    Some(found)
}

#[cfg(test)]
mod tests {
    use etherparse::icmpv6::NeighborAdvertisementHeader;

    use super::*;

    const DIRECTOR_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
    const RS_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x11];
    const VIP: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0x100);

    fn advert(eth_source: [u8; 6], options: &[u8], hop_limit: u8) -> Vec<u8> {
        let mut payload = VIP.octets().to_vec();
        payload.extend_from_slice(options);
        let mut frame = Vec::new();
        PacketBuilder::ethernet2(eth_source, DIRECTOR_MAC)
            .ipv6(VIP.octets(), link_local(DIRECTOR_MAC).octets(), hop_limit)
            .icmpv6(Icmpv6Type::NeighborAdvertisement(
                NeighborAdvertisementHeader {
                    router: false,
                    solicited: true,
                    r#override: true,
                },
            ))
            .write(&mut frame, &payload)
            .expect("an advertisement");
        frame
    }

    #[test]
    fn the_link_local_address_is_the_eui64_one() {
        assert_eq!(
            link_local([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]),
            "fe80::5054:ff:fe12:3456"
                .parse::<Ipv6Addr>()
                .expect("an address")
        );
    }

    #[test]
    fn a_solicitation_goes_to_the_targets_group_with_our_mac_in_its_option() {
        let sender = link_local(DIRECTOR_MAC);
        let frame = solicitation(DIRECTOR_MAC, sender, VIP).expect("built");
        assert_eq!(frame[..6], [0x33, 0x33, 0xff, 0, 0x01, 0x00]);
        let packet = SlicedPacket::from_ethernet(&frame).expect("parses");
        let Some(NetSlice::Ipv6(ip)) = &packet.net else {
            panic!("not IPv6")
        };
        let Some(TransportSlice::Icmpv6(icmp)) = &packet.transport else {
            panic!("not ICMPv6")
        };
        assert_eq!(ip.header().hop_limit(), NDP_HOP_LIMIT);
        assert_eq!(
            Ipv6Addr::from(ip.header().destination()),
            "ff02::1:ff00:100".parse::<Ipv6Addr>().expect("an address")
        );
        assert!(icmp.is_checksum_valid(sender.octets(), ip.header().destination()));
        assert_eq!(icmp.payload()[..16], VIP.octets());
        assert_eq!(icmp.payload()[16..], [1, 1, 2, 0, 0, 0, 0, 2]);
    }

    #[test]
    fn advertisements_name_the_mac_of_their_option_else_of_the_frame() {
        let with_option = advert(DIRECTOR_MAC, &[2, 1, 2, 0, 0, 0, 0, 0x11], NDP_HOP_LIMIT);
        assert_eq!(
            parse_advert(&with_option),
            Some(Advert {
                mac: RS_MAC,
                target: VIP
            })
        );
        let without = advert(RS_MAC, &[], NDP_HOP_LIMIT);
        assert_eq!(parse_advert(&without).map(|a| a.mac), Some(RS_MAC));
        assert_eq!(parse_advert(&advert(RS_MAC, &[], 254)), None, "hop limit");
        assert_eq!(
            parse_advert(&advert(RS_MAC, &[2, 0, 0, 0, 0, 0, 0, 0], NDP_HOP_LIMIT)),
            None,
            "an option of length 0"
        );
        let sender = link_local(DIRECTOR_MAC);
        let ns = solicitation(DIRECTOR_MAC, sender, VIP).expect("built");
        assert_eq!(parse_advert(&ns), None, "a solicitation");
    }
}
