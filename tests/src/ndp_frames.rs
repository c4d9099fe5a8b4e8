//! Neighbour discovery frames (RFC 4861) for tests, built by etherparse (headers, lengths and
//! the ICMPv6 checksum), independently of the XDP program's code and of the reference model:
//! what the program must answer is compared with frames built here.

use std::net::Ipv6Addr;

use etherparse::{
    Icmpv6Slice, Icmpv6Type, PacketBuilder, SlicedPacket, TransportSlice, VlanId,
    icmpv6::NeighborAdvertisementHeader,
};

use crate::model::Mac;

/// RFC 4861 7.1: neighbour discovery messages carry hop limit 255.
pub const NDP_HOP_LIMIT: u8 = 255;
/// Option types: source and target link-layer address.
pub const OPTION_SOURCE_LLA: u8 = 1;
pub const OPTION_TARGET_LLA: u8 = 2;
/// RFC 7527's nonce option (DAD), an option the program does not read.
pub const OPTION_NONCE: u8 = 14;
/// Options are counted in 8-byte units.
pub const OPTION_UNIT: usize = 8;
pub const IPV6_HEADER_LEN: usize = 40;
/// Where the ICMPv6 checksum lies in the message.
pub const ICMPV6_CHECKSUM_AT: usize = 2;
/// `ff02::1`, all nodes.
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

/// The solicited-node multicast address of `addr`: `ff02::1:ff00:0/104` and its last 3 bytes.
#[must_use]
pub fn solicited_node(addr: Ipv6Addr) -> Ipv6Addr {
    let o = addr.octets();
    Ipv6Addr::from([
        0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0xff, o[13], o[14], o[15],
    ])
}

/// The MAC of an IPv6 multicast address: `33:33` and its last 4 bytes (RFC 2464 7).
#[must_use]
pub fn multicast_mac(group: Ipv6Addr) -> Mac {
    let o = group.octets();
    [0x33, 0x33, o[12], o[13], o[14], o[15]]
}

/// A link-layer address option of `kind` for `mac`.
#[must_use]
pub fn lla_option(kind: u8, mac: Mac) -> Vec<u8> {
    let mut option = vec![kind, 1];
    option.extend_from_slice(&mac);
    option
}

/// What kind of neighbour discovery message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Solicitation,
    Advertisement {
        router: bool,
        solicited: bool,
        override_: bool,
    },
}

/// A Neighbor Solicitation or Advertisement in an Ethernet frame.
#[derive(Clone, Debug)]
pub struct NdpFrame {
    pub eth_src: Mac,
    pub eth_dst: Mac,
    pub vlan: Option<u16>,
    pub source: Ipv6Addr,
    pub destination: Ipv6Addr,
    pub hop_limit: u8,
    pub kind: Kind,
    pub target: Ipv6Addr,
    /// The options' bytes, as on the wire.
    pub options: Vec<u8>,
}

impl NdpFrame {
    /// "Who has `target`?" from `requester` at `requester_mac`, to the target's solicited-node
    /// group, with the source link-layer address option (as Linux sends it).
    #[must_use]
    pub fn solicitation(requester_mac: Mac, requester: Ipv6Addr, target: Ipv6Addr) -> Self {
        let group = solicited_node(target);
        Self {
            eth_src: requester_mac,
            eth_dst: multicast_mac(group),
            vlan: None,
            source: requester,
            destination: group,
            hop_limit: NDP_HOP_LIMIT,
            kind: Kind::Solicitation,
            target,
            options: lla_option(OPTION_SOURCE_LLA, requester_mac),
        }
    }

    /// A unicast solicitation (neighbour unreachability detection): to `target` at `to_mac`,
    /// without options.
    #[must_use]
    pub fn unicast_solicitation(
        requester_mac: Mac,
        requester: Ipv6Addr,
        target: Ipv6Addr,
        to_mac: Mac,
    ) -> Self {
        Self {
            eth_dst: to_mac,
            destination: target,
            options: Vec::new(),
            ..Self::solicitation(requester_mac, requester, target)
        }
    }

    /// A duplicate address detection probe for `target` from `mac`: source `::`, no source
    /// link-layer address option.
    #[must_use]
    pub fn dad_probe(mac: Mac, target: Ipv6Addr) -> Self {
        Self {
            source: Ipv6Addr::UNSPECIFIED,
            options: Vec::new(),
            ..Self::solicitation(mac, Ipv6Addr::UNSPECIFIED, target)
        }
    }

    /// The advertisement RFC 4861 7.2.4 wants for a solicitation from `requester` at
    /// `requester_mac`: from `mac`, source `target`, Solicited and Override, with the target
    /// link-layer address option.
    #[must_use]
    pub fn answer(mac: Mac, target: Ipv6Addr, requester_mac: Mac, requester: Ipv6Addr) -> Self {
        Self::advertisement(mac, target, requester_mac, requester, true)
    }

    /// An advertisement of `target` at `mac`, to `destination` at `dst_mac`, with the target
    /// link-layer address option; Override set, Solicited as given.
    #[must_use]
    pub fn advertisement(
        mac: Mac,
        target: Ipv6Addr,
        dst_mac: Mac,
        destination: Ipv6Addr,
        solicited: bool,
    ) -> Self {
        Self {
            eth_src: mac,
            eth_dst: dst_mac,
            vlan: None,
            source: target,
            destination,
            hop_limit: NDP_HOP_LIMIT,
            kind: Kind::Advertisement {
                router: false,
                solicited,
                override_: true,
            },
            target,
            options: lla_option(OPTION_TARGET_LLA, mac),
        }
    }

    /// The frame's bytes.
    #[must_use]
    pub fn build(&self) -> Vec<u8> {
        let icmp_type = match self.kind {
            Kind::Solicitation => Icmpv6Type::NeighborSolicitation,
            Kind::Advertisement {
                router,
                solicited,
                override_,
            } => Icmpv6Type::NeighborAdvertisement(NeighborAdvertisementHeader {
                router,
                solicited,
                r#override: override_,
            }),
        };
        // The 4 bytes after the checksum are the icmp_type's; the payload is the target and the
        // options.
        let mut payload = self.target.octets().to_vec();
        payload.extend_from_slice(&self.options);
        let eth = PacketBuilder::ethernet2(self.eth_src, self.eth_dst);
        let (source, destination) = (self.source.octets(), self.destination.octets());
        let mut frame = Vec::new();
        match self.vlan {
            Some(id) => eth
                .single_vlan(VlanId::try_new(id).expect("a valid VLAN id"))
                .ipv6(source, destination, self.hop_limit)
                .icmpv6(icmp_type)
                .write(&mut frame, &payload),
            None => eth
                .ipv6(source, destination, self.hop_limit)
                .icmpv6(icmp_type)
                .write(&mut frame, &payload),
        }
        .expect("writing an NDP frame");
        frame
    }
}

/// The ICMPv6 message of an Ethernet/IPv6 frame and its IPv6 addresses, if it is one.
fn icmpv6(frame: &[u8]) -> Option<(Icmpv6Slice<'_>, [u8; 16], [u8; 16])> {
    let sliced = SlicedPacket::from_ethernet(frame).ok()?;
    let Some(etherparse::NetSlice::Ipv6(ip)) = sliced.net else {
        return None;
    };
    let header = ip.header();
    let Some(TransportSlice::Icmpv6(icmp)) = sliced.transport else {
        return None;
    };
    Some((icmp, header.source(), header.destination()))
}

/// Whether `frame` holds an ICMPv6 message whose checksum is right (computed by etherparse).
#[must_use]
pub fn checksum_ok(frame: &[u8]) -> bool {
    icmpv6(frame)
        .is_some_and(|(icmp, source, destination)| icmp.is_checksum_valid(source, destination))
}

/// `frame` with the ICMPv6 checksum's bits flipped (at `icmp_offset`).
#[must_use]
pub fn with_bad_checksum(frame: &[u8], icmp_offset: usize) -> Vec<u8> {
    let mut bad = frame.to_vec();
    bad[icmp_offset + ICMPV6_CHECKSUM_AT] ^= 0xff;
    bad
}
