//! The reference model of neighbour discovery for IPv6 VIPs (the program's `ndp.rs`), as plain
//! host Rust: which Neighbor Solicitations are answered, and the Neighbor Advertisement they
//! become. Conflict counting is not modelled (it never changes a verdict or a frame).
//!
//! A message counts when it is valid as RFC 4861 7.1.1/7.1.2 require of a receiver (hop limit
//! 255, code 0, at least the 24-byte header, whole 8-byte option units, no option of length 0,
//! a correct ICMPv6 checksum) and not longer than [`MAX_NDP_LEN`]; it is answered when it asks
//! for an active VIP, from a unicast address and MAC, on an interface of the director, sent to
//! the VIP's solicited-node group or to the VIP at our MAC. DAD probes (source `::`) are not
//! answered.

use std::net::{IpAddr, Ipv6Addr};

use lb_common::{IPPROTO_ICMPV6, Verdict};

use crate::model::{Ingress, Mac, State, interface};

const IPV6_HEADER_LEN: usize = 40;
const IPV6_VERSION: u8 = 6;
const IPV6_PAYLOAD_LEN_AT: usize = 4;
const IPV6_NEXT_HEADER_AT: usize = 6;
const IPV6_HOP_LIMIT_AT: usize = 7;
const IPV6_SOURCE: std::ops::Range<usize> = 8..24;
const IPV6_DESTINATION: std::ops::Range<usize> = 24..40;
const NEIGHBOR_SOLICITATION: u8 = 135;
const NEIGHBOR_ADVERTISEMENT: u8 = 136;
const NDP_HOP_LIMIT: u8 = 255;
const NDP_HEADER_LEN: usize = 24;
const NDP_TARGET: std::ops::Range<usize> = 8..24;
const OPTION_UNIT: usize = 8;
/// The longest message the program reads: the header and 8 option units.
pub const MAX_NDP_LEN: usize = NDP_HEADER_LEN + 8 * OPTION_UNIT;
const OPTION_TARGET_LLA: u8 = 2;
/// Solicited and Override (RFC 4861 4.4), Router clear.
const NA_FLAGS: u8 = 0x60;
const NA_LEN: usize = NDP_HEADER_LEN + OPTION_UNIT;
const MAC_GROUP_BIT: u8 = 0x01;

/// The verdict of the IPv6 packet at `offset` in `frame` if it is a Neighbor Solicitation or
/// Advertisement (the frame turned into the answer when one is due), `None` for any other.
pub fn handle(
    state: &State,
    ingress: Ingress,
    frame: &mut Vec<u8>,
    offset: usize,
) -> Option<Verdict> {
    let ip = frame.get(offset..offset + IPV6_HEADER_LEN)?;
    if ip[0] >> 4 != IPV6_VERSION || ip[IPV6_NEXT_HEADER_AT] != IPPROTO_ICMPV6 {
        return None;
    }
    let l4 = offset + IPV6_HEADER_LEN;
    let kind = *frame.get(l4)?;
    if kind != NEIGHBOR_SOLICITATION && kind != NEIGHBOR_ADVERTISEMENT {
        return None;
    }
    let Some(target) = valid_target(frame, offset) else {
        return Some(Verdict::Pass);
    };
    if kind == NEIGHBOR_ADVERTISEMENT {
        return Some(Verdict::Pass);
    }
    let Some(&active) = state.vips.get(&IpAddr::V6(target)) else {
        return Some(Verdict::Pass);
    };
    if !active {
        return Some(if state.local_vips.contains(&IpAddr::V6(target)) {
            Verdict::DropNdpStandby
        } else {
            Verdict::Pass
        });
    }
    let ip = &frame[offset..offset + IPV6_HEADER_LEN];
    let source = addr(&ip[IPV6_SOURCE]);
    let destination = addr(&ip[IPV6_DESTINATION]);
    let requester_mac: Mac = frame[6..12].try_into().expect("6 bytes");
    let eth_dst: Mac = frame[0..6].try_into().expect("6 bytes");
    if source.is_unspecified() || source.is_multicast() || requester_mac[0] & MAC_GROUP_BIT != 0 {
        return Some(Verdict::Pass);
    }
    let Some(our_mac) = interface(state, ingress) else {
        return Some(Verdict::Pass);
    };
    let t = target.octets();
    let group = Ipv6Addr::new(
        0xff02,
        0,
        0,
        0,
        0,
        1,
        0xff00 | u16::from(t[13]),
        u16::from_be_bytes([t[14], t[15]]),
    );
    let g = group.octets();
    let group_mac = [0x33, 0x33, g[12], g[13], g[14], g[15]];
    let to_group = destination == group && eth_dst == group_mac;
    let to_us = destination == target && eth_dst == our_mac;
    if !to_group && !to_us {
        return Some(Verdict::Pass);
    }
    frame.resize(l4 + NA_LEN, 0);
    frame[0..6].copy_from_slice(&requester_mac);
    frame[6..12].copy_from_slice(&our_mac);
    let ip = &mut frame[offset..l4];
    ip[0..4].copy_from_slice(&[0x60, 0, 0, 0]);
    ip[IPV6_PAYLOAD_LEN_AT..IPV6_PAYLOAD_LEN_AT + 2]
        .copy_from_slice(&u16::try_from(NA_LEN).expect("small").to_be_bytes());
    ip[IPV6_NEXT_HEADER_AT] = IPPROTO_ICMPV6;
    ip[IPV6_HOP_LIMIT_AT] = NDP_HOP_LIMIT;
    ip[IPV6_SOURCE].copy_from_slice(&t);
    ip[IPV6_DESTINATION].copy_from_slice(&source.octets());
    let mut na = vec![NEIGHBOR_ADVERTISEMENT, 0, 0, 0, NA_FLAGS, 0, 0, 0];
    na.extend_from_slice(&t);
    na.extend_from_slice(&[OPTION_TARGET_LLA, 1]);
    na.extend_from_slice(&our_mac);
    let check = !checksum_sum(target, source, &na);
    na[2..4].copy_from_slice(&check.to_be_bytes());
    frame[l4..].copy_from_slice(&na);
    Some(Verdict::NdpReply)
}

/// The target of the valid message behind the IPv6 header at `offset`, `None` if invalid.
fn valid_target(frame: &[u8], offset: usize) -> Option<Ipv6Addr> {
    let ip = &frame[offset..offset + IPV6_HEADER_LEN];
    let len = usize::from(u16::from_be_bytes([
        ip[IPV6_PAYLOAD_LEN_AT],
        ip[IPV6_PAYLOAD_LEN_AT + 1],
    ]));
    if ip[IPV6_HOP_LIMIT_AT] != NDP_HOP_LIMIT
        || !(NDP_HEADER_LEN..=MAX_NDP_LEN).contains(&len)
        || len % OPTION_UNIT != 0
    {
        return None;
    }
    let l4 = offset + IPV6_HEADER_LEN;
    // The program reads the message a unit at a time: any part missing from the frame makes
    // it invalid (Ethernet padding beyond it is ignored).
    let message = frame.get(l4..l4 + len)?;
    if message[1] != 0 {
        return None;
    }
    let mut next_option = NDP_HEADER_LEN;
    while next_option < len {
        let units = usize::from(message[next_option + 1]);
        if units == 0 {
            return None;
        }
        next_option += units * OPTION_UNIT;
    }
    let source = addr(&ip[IPV6_SOURCE]);
    let destination = addr(&ip[IPV6_DESTINATION]);
    if next_option != len || checksum_sum(source, destination, message) != 0xffff {
        return None;
    }
    let target = addr(&message[NDP_TARGET]);
    // Multicast (RFC 4861 7.1.1) and IPv4-mapped targets are invalid.
    (!target.is_multicast() && target.to_ipv4_mapped().is_none()).then_some(target)
}

/// The folded one's-complement sum of the ICMPv6 pseudo-header and `message`.
fn checksum_sum(source: Ipv6Addr, destination: Ipv6Addr, message: &[u8]) -> u16 {
    let len = u32::try_from(message.len()).expect("small");
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&source.octets());
    bytes.extend_from_slice(&destination.octets());
    bytes.extend_from_slice(&len.to_be_bytes());
    bytes.extend_from_slice(&[0, 0, 0, IPPROTO_ICMPV6]);
    bytes.extend_from_slice(message);
    let mut sum: u64 = bytes
        .chunks(2)
        .map(|w| u64::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    u16::try_from(sum).expect("folded")
}

fn addr(bytes: &[u8]) -> Ipv6Addr {
    Ipv6Addr::from(<[u8; 16]>::try_from(bytes).expect("16 bytes"))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::{
        model::ETH_HEADER_LEN,
        ndp_frames::{NdpFrame, with_bad_checksum},
    };

    const OUR_MAC: Mac = [2, 0, 0, 0, 0, 2];
    const ROUTER_MAC: Mac = [2, 0, 0, 0, 0, 1];
    const VIP: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0x100);
    const ROUTER: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 1);

    fn state() -> State {
        State {
            interfaces: BTreeMap::from([(1, OUR_MAC)]),
            vips: BTreeMap::from([(VIP.into(), true)]),
            ..State::default()
        }
    }

    fn run(frame: &NdpFrame) -> (Option<Verdict>, Vec<u8>) {
        let mut output = frame.build();
        let verdict = handle(&state(), (1, 0), &mut output, ETH_HEADER_LEN);
        (verdict, output)
    }

    #[test]
    fn a_solicitation_for_an_active_vip_becomes_the_advertisement_etherparse_builds() {
        let answer = NdpFrame::answer(OUR_MAC, VIP, ROUTER_MAC, ROUTER).build();
        for ns in [
            NdpFrame::solicitation(ROUTER_MAC, ROUTER, VIP),
            NdpFrame::unicast_solicitation(ROUTER_MAC, ROUTER, VIP, OUR_MAC),
        ] {
            assert_eq!(run(&ns), (Some(Verdict::NdpReply), answer.clone()));
        }
    }

    #[test]
    fn invalid_or_unasked_solicitations_pass() {
        let ns = NdpFrame::solicitation(ROUTER_MAC, ROUTER, VIP);
        let bad = with_bad_checksum(&ns.build(), ETH_HEADER_LEN + IPV6_HEADER_LEN);
        let mut output = bad.clone();
        assert_eq!(
            handle(&state(), (1, 0), &mut output, ETH_HEADER_LEN),
            Some(Verdict::Pass)
        );
        assert_eq!(output, bad);
        for frame in [
            NdpFrame {
                hop_limit: 254,
                ..ns.clone()
            },
            NdpFrame::dad_probe(ROUTER_MAC, VIP),
            NdpFrame::unicast_solicitation(ROUTER_MAC, ROUTER, VIP, ROUTER_MAC),
        ] {
            assert_eq!(run(&frame), (Some(Verdict::Pass), frame.build()));
        }
    }
}
