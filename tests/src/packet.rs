//! Builders for the frames the program tests feed to the XDP program, and helpers that derive
//! malformed variants from a valid frame.
//!
//! Headers are written by etherparse (lengths, ether types and checksums included); only what
//! etherparse refuses to express (an IHL that contradicts the options) is patched by hand.
//! Addresses come from the benchmarking ranges 198.18.0.0/15 and 2001:2::/48 (RFC 2544, 5180),
//! so they can never collide with a real network.

use std::net::{Ipv4Addr, Ipv6Addr};

use etherparse::{
    ArpEthIpv4Packet, ArpOperation, EtherType, Ethernet2Header, IpFragOffset, IpHeaders, IpNumber,
    Ipv4Header, Ipv4HeaderSlice, Ipv4Options, PacketBuilder, PacketBuilderStep, SingleVlanHeader,
    VlanId, checksum::Sum16BitWords,
};
use etherparse::{Icmpv4Type, icmpv4::DestUnreachableHeader};
use lb_common::{ECHO_REPLY_TTL, IPPROTO_TCP, IPPROTO_UDP};

/// The gateway that hands client traffic to the director (the usual LVS-DR topology).
pub const ROUTER_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x01];
pub const ROUTER_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// The director: the interface the XDP program runs on.
pub const DIRECTOR_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x02];
pub const DIRECTOR_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
/// Another host on the link, e.g. one that claims the VIP.
pub const OTHER_HOST_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x03];
/// The virtual IP the services listen on.
pub const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
/// A second VIP, configured but not active.
pub const INACTIVE_VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 101);
/// An address on the link that is neither a VIP nor the director's.
pub const OTHER_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 200);
/// A client behind the router.
pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 1);
pub const CLIENT_IPV6: Ipv6Addr = Ipv6Addr::new(0x2001, 0x2, 0, 0, 0, 0, 0, 0x1);
pub const VIP_IPV6: Ipv6Addr = Ipv6Addr::new(0x2001, 0x2, 0, 0, 0, 0, 0, 0x100);
/// The first ephemeral port clients use in the tests.
pub const CLIENT_PORT: u16 = 40_000;

pub const BROADCAST_MAC: [u8; 6] = [0xff; 6];
/// An IPv4 multicast MAC (01:00:5e:...): its group bit is set.
pub const MULTICAST_MAC: [u8; 6] = [0x01, 0x00, 0x5e, 0x00, 0x00, 0x01];
/// What an ARP request carries as target MAC: unknown yet.
pub const UNKNOWN_MAC: [u8; 6] = [0; 6];

/// The VLAN the tagged test frames belong to.
pub const VLAN_ID: u16 = 100;
/// An outer (service provider) VLAN for double-tagged frames.
pub const OUTER_VLAN_ID: u16 = 200;
pub const TTL: u8 = 64;
/// IPv4 "Router Alert" option (RFC 2113): 4 bytes, so a header with it has IHL 6.
pub const ROUTER_ALERT_OPTION: [u8; 4] = [0x94, 0x04, 0x00, 0x00];
/// Sequence number and window of the TCP test segments: any value does.
pub const TCP_SEQUENCE: u32 = 1;
pub const TCP_WINDOW: u16 = 64_240;
pub const ICMP_ECHO_ID: u16 = 1;
pub const ICMP_ECHO_SEQUENCE: u16 = 1;
/// Payload of the test frames unless a test chooses another.
pub const DEFAULT_PAYLOAD: &[u8] = b"drlb test payload";
/// Smallest Ethernet frame without its FCS: shorter frames are padded to it on the wire.
pub const MIN_FRAME_LEN: usize = 60;
/// Bytes of an Ethernet header, and the offsets of its fields.
pub const ETH_HEADER_LEN: usize = Ethernet2Header::LEN;
pub const ETH_DST_MAC: std::ops::Range<usize> = 0..6;
pub const ETH_SRC_MAC: std::ops::Range<usize> = 6..12;
/// Where a frame's bytes after the two MACs start (ether type, tags, payload).
pub const AFTER_MACS: usize = 12;
/// The IHL nibble of the first IPv4 header byte.
const IPV4_IHL_MASK: u8 = 0x0f;
/// Where the checksum lies in a TCP and a UDP header.
const TCP_CHECKSUM_OFFSET: usize = 16;
const UDP_CHECKSUM_OFFSET: usize = 6;
/// The checksum field in an IPv4 header.
const IPV4_CHECKSUM: std::ops::Range<usize> = 10..12;

/// The MAC of backend number `n`.
#[must_use]
pub const fn backend_mac(n: u8) -> [u8; 6] {
    [0x02, 0x00, 0x00, 0x00, 0x01, n]
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Tcp,
    Udp,
}

impl Transport {
    /// The IP protocol number.
    #[must_use]
    pub const fn protocol(self) -> u8 {
        match self {
            Self::Tcp => IPPROTO_TCP,
            Self::Udp => IPPROTO_UDP,
        }
    }
}

/// The 5-tuple of a TCP or UDP packet over IPv4.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4Flow {
    pub saddr: Ipv4Addr,
    pub daddr: Ipv4Addr,
    pub sport: u16,
    pub dport: u16,
    pub transport: Transport,
}

impl Ipv4Flow {
    #[must_use]
    pub const fn tcp(saddr: Ipv4Addr, sport: u16, daddr: Ipv4Addr, dport: u16) -> Self {
        Self {
            saddr,
            daddr,
            sport,
            dport,
            transport: Transport::Tcp,
        }
    }

    #[must_use]
    pub const fn udp(saddr: Ipv4Addr, sport: u16, daddr: Ipv4Addr, dport: u16) -> Self {
        Self {
            saddr,
            daddr,
            sport,
            dport,
            transport: Transport::Udp,
        }
    }

    /// The same flow from another source port.
    #[must_use]
    pub const fn with_sport(self, sport: u16) -> Self {
        Self { sport, ..self }
    }

    /// The same flow to another destination port.
    #[must_use]
    pub const fn with_dport(self, dport: u16) -> Self {
        Self { dport, ..self }
    }
}

/// An Ethernet frame carrying a TCP or UDP packet over IPv4, as the router sends it to the
/// director unless changed.
#[derive(Clone, Debug)]
pub struct Ipv4Frame {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    /// 802.1Q tags, outermost first.
    pub vlans: Vec<u16>,
    pub flow: Ipv4Flow,
    /// Raw IPv4 options, a multiple of 4 bytes long.
    pub ipv4_options: Vec<u8>,
    pub payload: Vec<u8>,
}

impl Ipv4Frame {
    #[must_use]
    pub fn new(flow: Ipv4Flow) -> Self {
        Self {
            src_mac: ROUTER_MAC,
            dst_mac: DIRECTOR_MAC,
            vlans: Vec::new(),
            flow,
            ipv4_options: Vec::new(),
            payload: DEFAULT_PAYLOAD.to_vec(),
        }
    }

    /// Tags the frame with one 802.1Q VLAN.
    #[must_use]
    pub fn vlan(mut self, id: u16) -> Self {
        self.vlans = vec![id];
        self
    }

    /// Tags the frame twice (802.1ad QinQ).
    #[must_use]
    pub fn double_vlan(mut self, outer: u16, inner: u16) -> Self {
        self.vlans = vec![outer, inner];
        self
    }

    #[must_use]
    pub fn ipv4_options(mut self, options: &[u8]) -> Self {
        self.ipv4_options = options.to_vec();
        self
    }

    #[must_use]
    pub fn payload(mut self, payload: &[u8]) -> Self {
        self.payload = payload.to_vec();
        self
    }

    /// The frame's bytes, with valid lengths and checksums.
    #[must_use]
    pub fn build(&self) -> Vec<u8> {
        let Ipv4Flow {
            saddr,
            daddr,
            sport,
            dport,
            transport,
        } = self.flow;
        let mut ip = Ipv4Header::new(
            0,
            TTL,
            IpNumber(transport.protocol()),
            saddr.octets(),
            daddr.octets(),
        )
        .expect("an empty payload always fits");
        ip.options = Ipv4Options::try_from(self.ipv4_options.as_slice())
            .expect("IPv4 options: a multiple of 4 bytes, at most 40");
        let ip = ip_step(
            self.src_mac,
            self.dst_mac,
            &self.vlans,
            IpHeaders::Ipv4(ip, Default::default()),
        );
        let mut frame = Vec::new();
        match transport {
            Transport::Tcp => ip
                .tcp(sport, dport, TCP_SEQUENCE, TCP_WINDOW)
                .write_to_vec(&mut frame, &self.payload),
            Transport::Udp => ip.udp(sport, dport).write_to_vec(&mut frame, &self.payload),
        }
        .expect("etherparse writes any TCP/UDP test frame");
        frame
    }
}

/// The builder after the link layer (Ethernet and any VLAN tags) and the IP header.
fn ip_step(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    vlans: &[u16],
    ip: IpHeaders,
) -> PacketBuilderStep<IpHeaders> {
    let ethernet = PacketBuilder::ethernet2(src_mac, dst_mac);
    match *vlans {
        [] => ethernet.ip(ip),
        [id] => ethernet.single_vlan(vlan_id(id)).ip(ip),
        [outer, inner] => ethernet.double_vlan(vlan_id(outer), vlan_id(inner)).ip(ip),
        _ => panic!("at most two VLAN tags, got {vlans:?}"),
    }
}

fn vlan_id(id: u16) -> VlanId {
    VlanId::try_new(id).expect("a VLAN id has 12 bits")
}

/// An ICMP echo request (ping) from the router's side of the link.
#[must_use]
pub fn icmp_echo_request(saddr: Ipv4Addr, daddr: Ipv4Addr) -> Vec<u8> {
    let mut frame = Vec::new();
    PacketBuilder::ethernet2(ROUTER_MAC, DIRECTOR_MAC)
        .ipv4(saddr.octets(), daddr.octets(), TTL)
        .icmpv4_echo_request(ICMP_ECHO_ID, ICMP_ECHO_SEQUENCE)
        .write_to_vec(&mut frame, DEFAULT_PAYLOAD)
        .expect("etherparse writes an ICMP echo");
    frame
}

/// The echo reply to [`icmp_echo_request`] from `saddr` to `daddr`, as the director should
/// send it back, built from scratch (checksums computed by etherparse).
#[must_use]
pub fn icmp_echo_reply(saddr: Ipv4Addr, daddr: Ipv4Addr) -> Vec<u8> {
    let mut frame = Vec::new();
    PacketBuilder::ethernet2(DIRECTOR_MAC, ROUTER_MAC)
        .ipv4(daddr.octets(), saddr.octets(), ECHO_REPLY_TTL)
        .icmpv4_echo_reply(ICMP_ECHO_ID, ICMP_ECHO_SEQUENCE)
        .write_to_vec(&mut frame, DEFAULT_PAYLOAD)
        .expect("etherparse writes an ICMP echo reply");
    frame
}

/// The ICMP errors a router sends about a packet it could not deliver.
#[derive(Clone, Copy, Debug)]
pub enum IcmpError {
    /// Destination unreachable, fragmentation needed (type 3, code 4): path-MTU discovery.
    FragmentationNeeded { next_hop_mtu: u16 },
    /// Destination unreachable, port unreachable (type 3, code 3).
    PortUnreachable,
    /// Time exceeded in transit (type 11, code 0).
    TimeExceeded,
}

/// A router's ICMP error to `daddr` about `offending` (an Ethernet frame: its IPv4 header and
/// what follows are quoted, at most `quoted_payload` bytes past the IP header), sent from the
/// router's side of the link to the director.
#[must_use]
pub fn icmp_error(
    kind: IcmpError,
    daddr: Ipv4Addr,
    offending: &[u8],
    quoted_payload: usize,
) -> Vec<u8> {
    let offset = ipv4_header_offset(offending);
    let ip = Ipv4HeaderSlice::from_slice(&offending[offset..]).expect("an IPv4 header");
    let end = (offset + ip.slice().len())
        .saturating_add(quoted_payload)
        .min(offending.len());
    let quoted = &offending[offset..end];
    let icmp_type = match kind {
        IcmpError::FragmentationNeeded { next_hop_mtu } => {
            Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::FragmentationNeeded {
                next_hop_mtu,
            })
        }
        IcmpError::PortUnreachable => {
            Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::Port)
        }
        IcmpError::TimeExceeded => {
            Icmpv4Type::TimeExceeded(etherparse::icmpv4::TimeExceededCode::TtlExceededInTransit)
        }
    };
    let mut frame = Vec::new();
    PacketBuilder::ethernet2(ROUTER_MAC, DIRECTOR_MAC)
        .ipv4(ROUTER_IP.octets(), daddr.octets(), TTL)
        .icmpv4(icmp_type)
        .write_to_vec(&mut frame, quoted)
        .expect("etherparse writes an ICMP error");
    frame
}

/// The frame with another IPv4 identification (which names a fragmented datagram).
#[must_use]
pub fn with_ip_id(frame: &[u8], id: u16) -> Vec<u8> {
    with_ipv4_header(frame, |ip| ip.identification = id)
}

/// A UDP datagram over IPv6 from the router's side of the link.
#[must_use]
pub fn ipv6_udp(saddr: Ipv6Addr, sport: u16, daddr: Ipv6Addr, dport: u16) -> Vec<u8> {
    let mut frame = Vec::new();
    PacketBuilder::ethernet2(ROUTER_MAC, DIRECTOR_MAC)
        .ipv6(saddr.octets(), daddr.octets(), TTL)
        .udp(sport, dport)
        .write_to_vec(&mut frame, DEFAULT_PAYLOAD)
        .expect("etherparse writes an IPv6 UDP frame");
    frame
}

/// An Ethernet/IPv4 ARP packet in an Ethernet frame.
#[derive(Clone, Debug)]
pub struct Arp {
    pub eth_src: [u8; 6],
    pub eth_dst: [u8; 6],
    /// 802.1Q tag, if any.
    pub vlan: Option<u16>,
    pub operation: ArpOperation,
    pub sender_mac: [u8; 6],
    pub sender_ip: Ipv4Addr,
    pub target_mac: [u8; 6],
    pub target_ip: Ipv4Addr,
}

impl Arp {
    /// "Who has `target_ip`? Tell `sender_ip`", broadcast as hosts do.
    #[must_use]
    pub const fn request(sender_mac: [u8; 6], sender_ip: Ipv4Addr, target_ip: Ipv4Addr) -> Self {
        Self {
            eth_src: sender_mac,
            eth_dst: BROADCAST_MAC,
            vlan: None,
            operation: ArpOperation::REQUEST,
            sender_mac,
            sender_ip,
            target_mac: UNKNOWN_MAC,
            target_ip,
        }
    }

    /// "`sender_ip` is at `sender_mac`", sent to the requester.
    #[must_use]
    pub const fn reply(
        sender_mac: [u8; 6],
        sender_ip: Ipv4Addr,
        target_mac: [u8; 6],
        target_ip: Ipv4Addr,
    ) -> Self {
        Self {
            eth_src: sender_mac,
            eth_dst: target_mac,
            vlan: None,
            operation: ArpOperation::REPLY,
            sender_mac,
            sender_ip,
            target_mac,
            target_ip,
        }
    }

    #[must_use]
    pub fn build(&self) -> Vec<u8> {
        let arp = ArpEthIpv4Packet {
            operation: self.operation,
            sender_mac: self.sender_mac,
            sender_ipv4: self.sender_ip.octets(),
            target_mac: self.target_mac,
            target_ipv4: self.target_ip.octets(),
        };
        let ethernet = PacketBuilder::ethernet2(self.eth_src, self.eth_dst);
        let mut frame = Vec::new();
        match self.vlan {
            None => ethernet.arp(arp.into()).write_to_vec(&mut frame),
            Some(id) => ethernet
                .single_vlan(vlan_id(id))
                .arp(arp.into())
                .write_to_vec(&mut frame),
        }
        .expect("etherparse writes an ARP frame");
        frame
    }
}

/// Pads a frame with zeros to the Ethernet minimum, as a NIC does with short frames.
#[must_use]
pub fn pad_to_min_frame(mut frame: Vec<u8>) -> Vec<u8> {
    if frame.len() < MIN_FRAME_LEN {
        frame.resize(MIN_FRAME_LEN, 0);
    }
    frame
}

/// The first `len` bytes of a frame.
#[must_use]
pub fn truncated(frame: &[u8], len: usize) -> Vec<u8> {
    frame[..len].to_vec()
}

/// Offset of the IPv4 header in an Ethernet frame, after any VLAN tags.
///
/// # Panics
/// If the frame does not carry IPv4.
#[must_use]
pub fn ipv4_header_offset(frame: &[u8]) -> usize {
    let (ethernet, mut rest) =
        Ethernet2Header::from_slice(frame).expect("a frame with an Ethernet header");
    let mut ether_type = ethernet.ether_type;
    let mut offset = Ethernet2Header::LEN;
    while is_vlan_tag(ether_type) {
        let (tag, after) = SingleVlanHeader::from_slice(rest).expect("a complete VLAN tag");
        (ether_type, rest, offset) = (tag.ether_type, after, offset + SingleVlanHeader::LEN);
    }
    assert_eq!(ether_type, EtherType::IPV4, "the frame does not carry IPv4");
    offset
}

/// A copy of an IPv4 TCP or UDP frame whose checksum is left unfinished, as a sender with tx
/// checksum offload hands it to a veth: the folded pseudo-header sum (addresses, protocol,
/// TCP/UDP length), which the NIC was to complete over the segment.
///
/// # Panics
/// If the frame is not IPv4 with a TCP or UDP header.
#[must_use]
pub fn with_unfinished_checksum(frame: &[u8]) -> Vec<u8> {
    let offset = ipv4_header_offset(frame);
    let ip = Ipv4HeaderSlice::from_slice(&frame[offset..]).expect("an IPv4 header");
    let l4_offset = offset + ip.slice().len();
    let l4_len = ip.total_len() - u16::try_from(ip.slice().len()).expect("fits");
    let field = l4_offset
        + match ip.protocol() {
            IpNumber::TCP => TCP_CHECKSUM_OFFSET,
            IpNumber::UDP => UDP_CHECKSUM_OFFSET,
            other => panic!("not TCP or UDP: {other:?}"),
        };
    let pseudo = Sum16BitWords::new()
        .add_4bytes(ip.source())
        .add_4bytes(ip.destination())
        .add_2bytes([0, ip.protocol().0])
        .add_2bytes(l4_len.to_be_bytes())
        .ones_complement()
        .to_be();
    // ones_complement() is the checksum; the unfinished field holds the sum itself.
    let mut out = frame.to_vec();
    out[field..field + 2].copy_from_slice(&(!pseudo).to_be_bytes());
    out
}

fn is_vlan_tag(ether_type: EtherType) -> bool {
    [
        EtherType::VLAN_TAGGED_FRAME,
        EtherType::PROVIDER_BRIDGING,
        EtherType::VLAN_DOUBLE_TAGGED_FRAME,
    ]
    .contains(&ether_type)
}

/// A copy of an IPv4 frame whose IPv4 header was changed by `edit`; the checksum is recomputed
/// so that the edited field is the only thing wrong with the frame.
///
/// # Panics
/// If the frame has no parseable IPv4 header, or `edit` changes the header's length.
#[must_use]
pub fn with_ipv4_header(frame: &[u8], edit: impl FnOnce(&mut Ipv4Header)) -> Vec<u8> {
    let offset = ipv4_header_offset(frame);
    let mut header = Ipv4HeaderSlice::from_slice(&frame[offset..])
        .expect("a well-formed IPv4 header")
        .to_header();
    let len = header.header_len();
    edit(&mut header);
    header.header_checksum = header.calc_header_checksum();
    let bytes = header.to_bytes();
    assert_eq!(
        bytes.len(),
        len,
        "the edit must keep the IPv4 header length"
    );
    let mut edited = frame.to_vec();
    edited[offset..offset + len].copy_from_slice(&bytes);
    edited
}

/// The frame with another IPv4 total length.
#[must_use]
pub fn with_total_len(frame: &[u8], total_len: u16) -> Vec<u8> {
    with_ipv4_header(frame, |ip| ip.total_len = total_len)
}

/// The frame as an IPv4 fragment: "more fragments" flag and offset (in 8-byte units).
#[must_use]
pub fn with_fragment(frame: &[u8], more_fragments: bool, offset_units: u16) -> Vec<u8> {
    let offset = IpFragOffset::try_new(offset_units).expect("a fragment offset has 13 bits");
    with_ipv4_header(frame, |ip| {
        // A fragmentable packet: DF and MF together would contradict each other.
        ip.dont_fragment = false;
        ip.more_fragments = more_fragments;
        ip.fragment_offset = offset;
    })
}

/// The frame with another IHL, whatever the options say: etherparse derives the IHL from the
/// options, so this is patched by hand. The checksum is refreshed over the first `ihl * 4` bytes
/// when that covers a whole minimal header; a shorter header has no meaningful checksum.
#[must_use]
pub fn with_ihl(frame: &[u8], ihl: u8) -> Vec<u8> {
    assert!(ihl <= IPV4_IHL_MASK, "the IHL has 4 bits");
    let offset = ipv4_header_offset(frame);
    let mut edited = frame.to_vec();
    edited[offset] = (edited[offset] & !IPV4_IHL_MASK) | ihl;
    let header_len = usize::from(ihl) * 4;
    if header_len >= Ipv4Header::MIN_LEN && offset + header_len <= edited.len() {
        let checksum = offset + IPV4_CHECKSUM.start..offset + IPV4_CHECKSUM.end;
        edited[checksum.clone()].fill(0);
        // Sum16BitWords adds the words as loaded in native byte order, so its result is the
        // checksum's wire bytes in native order (etherparse's own header code does the same).
        let sum = Sum16BitWords::new()
            .add_slice(&edited[offset..offset + header_len])
            .ones_complement();
        edited[checksum].copy_from_slice(&sum.to_ne_bytes());
    }
    edited
}

#[cfg(test)]
mod tests {
    use etherparse::{LinkExtHeader, NetHeaders, PacketHeaders, TransportHeader, ip_number};

    use super::*;

    const SERVICE_PORT: u16 = 8080;
    const TCP_FLOW: Ipv4Flow = Ipv4Flow::tcp(CLIENT_IP, CLIENT_PORT, VIP, SERVICE_PORT);
    const UDP_FLOW: Ipv4Flow = Ipv4Flow::udp(CLIENT_IP, CLIENT_PORT, VIP, SERVICE_PORT);

    fn ipv4_of(frame: &[u8]) -> Ipv4Header {
        let offset = ipv4_header_offset(frame);
        Ipv4HeaderSlice::from_slice(&frame[offset..])
            .expect("an IPv4 header")
            .to_header()
    }

    fn assert_checksum_valid(frame: &[u8]) {
        let ip = ipv4_of(frame);
        assert_eq!(
            ip.header_checksum,
            ip.calc_header_checksum(),
            "IPv4 header checksum"
        );
    }

    fn ethernet_of(headers: &PacketHeaders<'_>) -> Ethernet2Header {
        headers
            .link
            .clone()
            .and_then(etherparse::LinkHeader::ethernet2)
            .expect("Ethernet II")
    }

    fn vlan_ids(headers: &PacketHeaders<'_>) -> Vec<u16> {
        headers
            .link_exts
            .iter()
            .map(|ext| match ext {
                LinkExtHeader::Vlan(tag) => tag.vlan_id.value(),
                LinkExtHeader::Macsec(_) => panic!("no MACsec in test frames"),
            })
            .collect()
    }

    #[test]
    fn tcp_frame_parses_back_to_what_was_built() {
        let frame = Ipv4Frame::new(TCP_FLOW).build();
        let headers = PacketHeaders::from_ethernet_slice(&frame).expect("parses");
        let ethernet = ethernet_of(&headers);
        assert_eq!(
            (ethernet.source, ethernet.destination),
            (ROUTER_MAC, DIRECTOR_MAC)
        );
        let Some(NetHeaders::Ipv4(ip, _)) = &headers.net else {
            panic!("IPv4 expected: {:?}", headers.net)
        };
        assert_eq!(
            (ip.source, ip.destination, ip.protocol),
            (CLIENT_IP.octets(), VIP.octets(), ip_number::TCP)
        );
        assert_eq!(usize::from(ip.total_len), frame.len() - ETH_HEADER_LEN);
        let Some(TransportHeader::Tcp(tcp)) = &headers.transport else {
            panic!("TCP expected")
        };
        assert_eq!(
            (tcp.source_port, tcp.destination_port),
            (CLIENT_PORT, SERVICE_PORT)
        );
        assert_eq!(headers.payload.slice(), DEFAULT_PAYLOAD);
        assert_checksum_valid(&frame);
    }

    #[test]
    fn udp_frame_parses_back_to_what_was_built() {
        let frame = Ipv4Frame::new(UDP_FLOW).payload(b"x").build();
        let headers = PacketHeaders::from_ethernet_slice(&frame).expect("parses");
        let Some(TransportHeader::Udp(udp)) = &headers.transport else {
            panic!("UDP expected")
        };
        assert_eq!(
            (udp.source_port, udp.destination_port),
            (CLIENT_PORT, SERVICE_PORT)
        );
        assert_eq!(headers.payload.slice(), b"x");
        assert_checksum_valid(&frame);
    }

    #[test]
    fn vlan_tags_are_written_outermost_first() {
        let single = Ipv4Frame::new(TCP_FLOW).vlan(VLAN_ID).build();
        assert_eq!(
            vlan_ids(&PacketHeaders::from_ethernet_slice(&single).expect("parses")),
            [VLAN_ID]
        );
        assert_eq!(
            ipv4_header_offset(&single),
            ETH_HEADER_LEN + SingleVlanHeader::LEN
        );
        let double = Ipv4Frame::new(TCP_FLOW)
            .double_vlan(OUTER_VLAN_ID, VLAN_ID)
            .build();
        assert_eq!(
            vlan_ids(&PacketHeaders::from_ethernet_slice(&double).expect("parses")),
            [OUTER_VLAN_ID, VLAN_ID]
        );
        assert_eq!(
            ipv4_header_offset(&double),
            ETH_HEADER_LEN + 2 * SingleVlanHeader::LEN
        );
    }

    #[test]
    fn ipv4_options_make_ihl_6() {
        let frame = Ipv4Frame::new(TCP_FLOW)
            .ipv4_options(&ROUTER_ALERT_OPTION)
            .build();
        let ip = ipv4_of(&frame);
        assert_eq!(ip.ihl(), 6);
        assert_eq!(&ip.options[..], ROUTER_ALERT_OPTION);
        assert_checksum_valid(&frame);
        let headers = PacketHeaders::from_ethernet_slice(&frame).expect("parses");
        assert!(matches!(headers.transport, Some(TransportHeader::Tcp(_))));
    }

    #[test]
    fn padding_extends_the_frame_but_not_the_ip_packet() {
        let frame = pad_to_min_frame(Ipv4Frame::new(UDP_FLOW).payload(b"x").build());
        assert_eq!(frame.len(), MIN_FRAME_LEN);
        let ip = ipv4_of(&frame);
        assert!(
            usize::from(ip.total_len) + ETH_HEADER_LEN < MIN_FRAME_LEN,
            "IP total length {}",
            ip.total_len
        );
        let headers = PacketHeaders::from_ethernet_slice(&frame).expect("parses");
        assert_eq!(headers.payload.slice(), b"x", "the padding is not payload");
    }

    #[test]
    fn icmp_echo_and_ipv6_frames_parse() {
        let icmp = icmp_echo_request(CLIENT_IP, VIP);
        let headers = PacketHeaders::from_ethernet_slice(&icmp).expect("parses");
        assert!(matches!(
            headers.transport,
            Some(TransportHeader::Icmpv4(_))
        ));
        assert_checksum_valid(&icmp);

        let ipv6 = ipv6_udp(CLIENT_IPV6, CLIENT_PORT, VIP_IPV6, SERVICE_PORT);
        let headers = PacketHeaders::from_ethernet_slice(&ipv6).expect("parses");
        let Some(NetHeaders::Ipv6(ip, _)) = &headers.net else {
            panic!("IPv6 expected")
        };
        assert_eq!(
            (ip.source, ip.destination),
            (CLIENT_IPV6.octets(), VIP_IPV6.octets())
        );
        assert!(matches!(headers.transport, Some(TransportHeader::Udp(_))));
    }

    #[test]
    fn arp_request_and_reply_parse_back() {
        let request = Arp::request(ROUTER_MAC, ROUTER_IP, VIP).build();
        let headers = PacketHeaders::from_ethernet_slice(&request).expect("parses");
        let ethernet = ethernet_of(&headers);
        assert_eq!(
            (ethernet.source, ethernet.destination, ethernet.ether_type),
            (ROUTER_MAC, BROADCAST_MAC, EtherType::ARP)
        );
        let Some(NetHeaders::Arp(arp)) = &headers.net else {
            panic!("ARP expected")
        };
        let arp = arp.try_eth_ipv4().expect("Ethernet/IPv4 ARP");
        assert_eq!(arp.operation, ArpOperation::REQUEST);
        assert_eq!(
            (arp.sender_mac, arp.sender_ipv4),
            (ROUTER_MAC, ROUTER_IP.octets())
        );
        assert_eq!(
            (arp.target_mac, arp.target_ipv4),
            (UNKNOWN_MAC, VIP.octets())
        );
        assert_eq!(request.len(), ETH_HEADER_LEN + ArpEthIpv4Packet::LEN);

        let reply = Arp::reply(DIRECTOR_MAC, VIP, ROUTER_MAC, ROUTER_IP).build();
        let headers = PacketHeaders::from_ethernet_slice(&reply).expect("parses");
        let ethernet = ethernet_of(&headers);
        assert_eq!(
            (ethernet.source, ethernet.destination),
            (DIRECTOR_MAC, ROUTER_MAC)
        );
        let Some(NetHeaders::Arp(arp)) = &headers.net else {
            panic!("ARP expected")
        };
        assert_eq!(arp.operation, ArpOperation::REPLY);
    }

    #[test]
    fn tagged_arp_keeps_its_tag() {
        let frame = Arp {
            vlan: Some(VLAN_ID),
            ..Arp::request(ROUTER_MAC, ROUTER_IP, VIP)
        }
        .build();
        let headers = PacketHeaders::from_ethernet_slice(&frame).expect("parses");
        assert_eq!(vlan_ids(&headers), [VLAN_ID]);
        assert!(matches!(headers.net, Some(NetHeaders::Arp(_))));
    }

    #[test]
    fn header_edits_change_one_field_and_keep_the_checksum_valid() {
        let frame = Ipv4Frame::new(TCP_FLOW).build();
        let original = ipv4_of(&frame);

        let longer = with_total_len(&frame, original.total_len + 1);
        assert_eq!(ipv4_of(&longer).total_len, original.total_len + 1);
        assert_eq!(longer.len(), frame.len());
        assert_checksum_valid(&longer);

        let first = with_fragment(&frame, true, 0);
        let ip = ipv4_of(&first);
        assert!(ip.more_fragments && ip.fragment_offset.value() == 0 && !ip.dont_fragment);
        assert!(ip.is_fragmenting_payload());
        assert_checksum_valid(&first);

        let later = with_fragment(&frame, false, 1);
        assert_eq!(ipv4_of(&later).fragment_offset.value(), 1);
        assert_checksum_valid(&later);

        let edited = with_ipv4_header(&frame, |ip| ip.time_to_live -= 1);
        let changed: Vec<usize> = (0..frame.len())
            .filter(|&i| frame[i] != edited[i])
            .collect();
        let ip_offset = ipv4_header_offset(&frame);
        assert!(
            changed
                .iter()
                .all(|i| (ip_offset..ip_offset + Ipv4Header::MIN_LEN).contains(i)),
            "{changed:?}"
        );
    }

    #[test]
    fn ihl_edit_patches_only_the_nibble_and_checksum() {
        let frame = Ipv4Frame::new(TCP_FLOW).build();
        let offset = ipv4_header_offset(&frame);
        let short = with_ihl(&frame, 4);
        assert_eq!(short[offset] & IPV4_IHL_MASK, 4);
        assert_eq!(short[offset] >> 4, 4, "the version is kept");
        assert!(
            Ipv4HeaderSlice::from_slice(&short[offset..]).is_err(),
            "etherparse rejects IHL 4"
        );

        // Same IHL back: the frame is what it was, checksum included.
        assert_eq!(with_ihl(&frame, 5), frame);
    }

    #[test]
    fn truncation_keeps_a_prefix() {
        let frame = Ipv4Frame::new(TCP_FLOW).build();
        assert_eq!(truncated(&frame, ETH_HEADER_LEN), &frame[..ETH_HEADER_LEN]);
    }
}

// IPv6 -----------------------------------------------------------------------------------------

/// The router's IPv6 address (the source of ICMPv6 errors it sends).
pub const ROUTER_IPV6: Ipv6Addr = Ipv6Addr::new(0x2001, 0x2, 0, 0, 0, 0, 1, 1);
/// An IPv6 VIP the director holds as standby.
pub const INACTIVE_VIP_IPV6: Ipv6Addr = Ipv6Addr::new(0x2001, 0x2, 0, 0, 0, 0, 0, 0x101);
/// An IPv6 address that is no VIP.
pub const OTHER_IPV6: Ipv6Addr = Ipv6Addr::new(0x2001, 0x2, 0, 0, 0, 0, 0, 0x200);
/// The IPv6 fixed header's length.
pub const IPV6_HEADER_LEN: usize = etherparse::Ipv6Header::LEN;
/// Options of an 8-byte hop-by-hop or destination options header (a PadN option filling it).
const PADN_OPTION: [u8; 6] = [1, 4, 0, 0, 0, 0];
/// A type 0 routing header with no address left (segments left 0): 8 bytes, skipped by hosts.
const EMPTY_ROUTING: [u8; 6] = [0, 0, 0, 0, 0, 0];
/// The Segment Routing header's routing type (RFC 8754).
const SEGMENT_ROUTING_TYPE: u8 = 4;
const ETHERTYPE_IPV6: EtherType = EtherType::IPV6;

/// The 5-tuple of a TCP or UDP packet over IPv6.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv6Flow {
    pub saddr: Ipv6Addr,
    pub daddr: Ipv6Addr,
    pub sport: u16,
    pub dport: u16,
    pub transport: Transport,
}

impl Ipv6Flow {
    #[must_use]
    pub const fn tcp(saddr: Ipv6Addr, sport: u16, daddr: Ipv6Addr, dport: u16) -> Self {
        Self {
            saddr,
            daddr,
            sport,
            dport,
            transport: Transport::Tcp,
        }
    }

    #[must_use]
    pub const fn udp(saddr: Ipv6Addr, sport: u16, daddr: Ipv6Addr, dport: u16) -> Self {
        Self {
            saddr,
            daddr,
            sport,
            dport,
            transport: Transport::Udp,
        }
    }

    #[must_use]
    pub const fn with_sport(self, sport: u16) -> Self {
        Self { sport, ..self }
    }
}

/// An Ethernet frame carrying a TCP or UDP packet over IPv6, with any extension headers, as the
/// router sends it to the director unless changed.
#[derive(Clone, Debug)]
pub struct Ipv6Frame {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub vlans: Vec<u16>,
    pub flow: Ipv6Flow,
    pub extensions: etherparse::Ipv6Extensions,
    pub payload: Vec<u8>,
}

impl Ipv6Frame {
    #[must_use]
    pub fn new(flow: Ipv6Flow) -> Self {
        Self {
            src_mac: ROUTER_MAC,
            dst_mac: DIRECTOR_MAC,
            vlans: Vec::new(),
            flow,
            extensions: etherparse::Ipv6Extensions::default(),
            payload: DEFAULT_PAYLOAD.to_vec(),
        }
    }

    #[must_use]
    pub fn vlan(mut self, id: u16) -> Self {
        self.vlans = vec![id];
        self
    }

    /// Adds an 8-byte hop-by-hop options header (padding only).
    #[must_use]
    pub fn hop_by_hop(mut self) -> Self {
        self.extensions.hop_by_hop_options = Some(raw_extension(&PADN_OPTION));
        self
    }

    /// Adds an 8-byte destination options header (padding only), before any routing header.
    #[must_use]
    pub fn destination_options(mut self) -> Self {
        self.extensions.destination_options = Some(raw_extension(&PADN_OPTION));
        self
    }

    /// Adds an 8-byte routing header with no segment left, and (if `final_options`) a
    /// destination options header after it.
    #[must_use]
    pub fn routing(mut self, final_options: bool) -> Self {
        self.extensions.routing = Some(etherparse::Ipv6RoutingExtensions {
            routing: raw_extension(&EMPTY_ROUTING),
            final_destination_options: final_options.then(|| raw_extension(&PADN_OPTION)),
        });
        self
    }

    /// Adds a Segment Routing header (RFC 8754, routing type 4) with one segment left, to
    /// `next_segment`: the packet's destination is then a waypoint, not where it ends.
    #[must_use]
    pub fn routing_via(mut self, next_segment: Ipv6Addr) -> Self {
        // Routing type, segments left, last entry, flags, tag (2 bytes), then the segment.
        let mut payload = vec![SEGMENT_ROUTING_TYPE, 1, 0, 0, 0, 0];
        payload.extend_from_slice(&next_segment.octets());
        self.extensions.routing = Some(etherparse::Ipv6RoutingExtensions {
            routing: raw_extension(&payload),
            final_destination_options: None,
        });
        self
    }

    /// Adds a fragment header: offset (in 8-byte units), more fragments, identification.
    #[must_use]
    pub fn fragment(mut self, offset_units: u16, more: bool, id: u32) -> Self {
        self.extensions.fragment = Some(etherparse::Ipv6FragmentHeader::new(
            IpNumber::TCP,
            IpFragOffset::try_new(offset_units).expect("a fragment offset has 13 bits"),
            more,
            id,
        ));
        self
    }

    #[must_use]
    pub fn payload(mut self, payload: &[u8]) -> Self {
        self.payload = payload.to_vec();
        self
    }

    /// The frame's bytes, with valid lengths, next headers and checksum.
    #[must_use]
    pub fn build(&self) -> Vec<u8> {
        let Ipv6Flow {
            saddr,
            daddr,
            sport,
            dport,
            transport,
        } = self.flow;
        let header = etherparse::Ipv6Header {
            hop_limit: TTL,
            next_header: IpNumber(transport.protocol()),
            source: saddr.octets(),
            destination: daddr.octets(),
            ..Default::default()
        };
        let ip = ip_step(
            self.src_mac,
            self.dst_mac,
            &self.vlans,
            IpHeaders::Ipv6(header, self.extensions.clone()),
        );
        let mut frame = Vec::new();
        match transport {
            Transport::Tcp => ip
                .tcp(sport, dport, TCP_SEQUENCE, TCP_WINDOW)
                .write_to_vec(&mut frame, &self.payload),
            Transport::Udp => ip.udp(sport, dport).write_to_vec(&mut frame, &self.payload),
        }
        .expect("etherparse writes any IPv6 TCP/UDP test frame");
        frame
    }
}

fn raw_extension(payload: &[u8]) -> etherparse::Ipv6RawExtHeader {
    // The next header is set by the builder when it chains the headers.
    etherparse::Ipv6RawExtHeader::new_raw(IpNumber::TCP, payload).expect("a 6 + 8n byte payload")
}

/// Offset of the IPv6 header in an Ethernet frame, after any VLAN tags.
///
/// # Panics
/// If the frame does not carry IPv6.
#[must_use]
pub fn ipv6_header_offset(frame: &[u8]) -> usize {
    let (ethernet, mut rest) =
        Ethernet2Header::from_slice(frame).expect("a frame with an Ethernet header");
    let mut ether_type = ethernet.ether_type;
    let mut offset = Ethernet2Header::LEN;
    while is_vlan_tag(ether_type) {
        let (tag, after) = SingleVlanHeader::from_slice(rest).expect("a complete VLAN tag");
        (ether_type, rest, offset) = (tag.ether_type, after, offset + SingleVlanHeader::LEN);
    }
    assert_eq!(ether_type, ETHERTYPE_IPV6, "the frame does not carry IPv6");
    offset
}

/// An ICMPv6 echo request (ping) from the router's side of the link.
#[must_use]
pub fn icmpv6_echo_request(saddr: Ipv6Addr, daddr: Ipv6Addr) -> Vec<u8> {
    let mut frame = Vec::new();
    PacketBuilder::ethernet2(ROUTER_MAC, DIRECTOR_MAC)
        .ipv6(saddr.octets(), daddr.octets(), TTL)
        .icmpv6_echo_request(ICMP_ECHO_ID, ICMP_ECHO_SEQUENCE)
        .write_to_vec(&mut frame, DEFAULT_PAYLOAD)
        .expect("etherparse writes an ICMPv6 echo");
    frame
}

/// The echo reply to [`icmpv6_echo_request`] from `saddr` to `daddr`, as the director should
/// send it back, built from scratch (checksum over the pseudo-header computed by etherparse).
#[must_use]
pub fn icmpv6_echo_reply(saddr: Ipv6Addr, daddr: Ipv6Addr) -> Vec<u8> {
    let mut frame = Vec::new();
    PacketBuilder::ethernet2(DIRECTOR_MAC, ROUTER_MAC)
        .ipv6(daddr.octets(), saddr.octets(), ECHO_REPLY_TTL)
        .icmpv6_echo_reply(ICMP_ECHO_ID, ICMP_ECHO_SEQUENCE)
        .write_to_vec(&mut frame, DEFAULT_PAYLOAD)
        .expect("etherparse writes an ICMPv6 echo reply");
    frame
}

/// The ICMPv6 errors a router sends about a packet it could not deliver.
#[derive(Clone, Copy, Debug)]
pub enum Icmpv6Error {
    /// Packet too big (type 2): path-MTU discovery.
    PacketTooBig { mtu: u32 },
    /// Destination unreachable, address unreachable (type 1, code 3).
    AddressUnreachable,
    /// Time exceeded, hop limit exceeded (type 3, code 0).
    TimeExceeded,
}

/// A router's ICMPv6 error to `daddr` about `offending` (an Ethernet frame: its IPv6 packet is
/// quoted, at most `quoted_len` bytes of it), from the router's side of the link.
#[must_use]
pub fn icmpv6_error(
    kind: Icmpv6Error,
    daddr: Ipv6Addr,
    offending: &[u8],
    quoted_len: usize,
) -> Vec<u8> {
    use etherparse::{Icmpv6Type, icmpv6};
    let offset = ipv6_header_offset(offending);
    let end = offset.saturating_add(quoted_len).min(offending.len());
    let icmp_type = match kind {
        Icmpv6Error::PacketTooBig { mtu } => Icmpv6Type::PacketTooBig { mtu },
        Icmpv6Error::AddressUnreachable => {
            Icmpv6Type::DestinationUnreachable(icmpv6::DestUnreachableCode::Address)
        }
        Icmpv6Error::TimeExceeded => {
            Icmpv6Type::TimeExceeded(icmpv6::TimeExceededCode::HopLimitExceeded)
        }
    };
    let mut frame = Vec::new();
    PacketBuilder::ethernet2(ROUTER_MAC, DIRECTOR_MAC)
        .ipv6(ROUTER_IPV6.octets(), daddr.octets(), TTL)
        .icmpv6(icmp_type)
        .write_to_vec(&mut frame, &offending[offset..end])
        .expect("etherparse writes an ICMPv6 error");
    frame
}

/// A copy of an IPv6 frame whose IPv6 payload length says `payload_len`.
#[must_use]
pub fn with_ipv6_payload_len(frame: &[u8], payload_len: u16) -> Vec<u8> {
    /// Where the payload length lies in the IPv6 header.
    const PAYLOAD_LEN_AT: usize = 4;
    let at = ipv6_header_offset(frame) + PAYLOAD_LEN_AT;
    let mut frame = frame.to_vec();
    frame[at..at + 2].copy_from_slice(&payload_len.to_be_bytes());
    frame
}

/// A copy of an IPv6 TCP/UDP frame (without extension headers) whose checksum is left
/// unfinished, as a sender with tx checksum offload hands it to a veth: the folded IPv6
/// pseudo-header sum (addresses, upper-layer length, next header).
///
/// # Panics
/// If the frame is not IPv6 with a TCP or UDP header right after the fixed header.
#[must_use]
pub fn with_unfinished_checksum_v6(frame: &[u8]) -> Vec<u8> {
    let offset = ipv6_header_offset(frame);
    let header = etherparse::Ipv6HeaderSlice::from_slice(&frame[offset..]).expect("IPv6");
    let protocol = header.next_header().0;
    let l4_len = header.payload_length();
    let pseudo = Sum16BitWords::new()
        .add_16bytes(header.source())
        .add_16bytes(header.destination())
        .add_2bytes([0, protocol])
        .add_2bytes(l4_len.to_be_bytes())
        .ones_complement()
        .to_be();
    let field = match protocol {
        IPPROTO_TCP => TCP_CHECKSUM_OFFSET,
        IPPROTO_UDP => UDP_CHECKSUM_OFFSET,
        other => panic!("protocol {other} is not TCP or UDP"),
    };
    let at = offset + IPV6_HEADER_LEN + field;
    let mut frame = frame.to_vec();
    // ones_complement() is the checksum; the unfinished field holds the sum itself.
    frame[at..at + 2].copy_from_slice(&(!pseudo).to_be_bytes());
    frame
}
