//! A reference model of drlb's XDP data path, as plain host Rust: a frame, the ingress
//! interface and a plain description of the director's state go in; the XDP action, the verdict
//! the program counts and the output frame come out.
//!
//! The model shares lb-common's types (`Verdict`) and flow hash with the program, never its
//! code or its map layout: [`State`] says what the director knows (interfaces, VIPs, services
//! with their tables and backends), not how the maps hold it, so the layout can change without
//! touching the model (only `fuzz::load_state` writes the maps). The model keeps its own mirror
//! of the flow table and updates it exactly as the program does. The fuzzer (`fuzz.rs`) runs
//! frames through both and compares.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use lb_common::{
    ECHO_REPLY_TTL, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, MAX_HEADER_OFFSET,
    MAX_IPV6_EXTENSION_HEADERS, Verdict,
    hash::{flow_hash_v4, flow_hash_v6, ipv6_words, source_hash_v4, source_hash_v6},
};
use serde::{Deserialize, Serialize};

pub type Mac = [u8; 6];

pub const BROADCAST: Mac = [0xff; 6];
/// The group bit of a MAC's first octet: set for multicast and broadcast.
const MAC_GROUP_BIT: u8 = 0x01;

/// The Ethernet header: two MACs and the ether type.
pub const ETH_HEADER_LEN: usize = 14;
const ETH_DST: std::ops::Range<usize> = 0..6;
const ETH_SRC: std::ops::Range<usize> = 6..12;
const ETH_TYPE_AT: usize = 12;
/// An 802.1Q / 802.1ad tag: TCI and the inner ether type.
const VLAN_TAG_LEN: usize = 4;
const VLAN_INNER_TYPE_AT: usize = 2;
const VLAN_VID_MASK: u16 = 0x0fff;
/// The VLAN id of untagged frames (the state's interfaces are all untagged).
const NO_VLAN: u16 = 0;

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_ARP: u16 = 0x0806;
const ETHERTYPE_8021Q: u16 = 0x8100;
const ETHERTYPE_IPV6: u16 = 0x86dd;

/// ARP for IPv4 over Ethernet: field offsets in the ARP header and its values.
const ARP_LEN: usize = 28;
const ARP_HTYPE_AT: usize = 0;
const ARP_PTYPE_AT: usize = 2;
const ARP_HLEN_AT: usize = 4;
const ARP_PLEN_AT: usize = 5;
const ARP_OPER_AT: usize = 6;
const ARP_SHA: std::ops::Range<usize> = 8..14;
const ARP_SPA: std::ops::Range<usize> = 14..18;
const ARP_THA: std::ops::Range<usize> = 18..24;
const ARP_TPA: std::ops::Range<usize> = 24..28;
const ARP_HTYPE_ETHERNET: u16 = 1;
const ARP_PTYPE_IPV4: u16 = 0x0800;
const ARP_HLEN_ETHERNET: u8 = 6;
const ARP_PLEN_IPV4: u8 = 4;
const ARP_OP_REQUEST: u16 = 1;
const ARP_OP_REPLY: u16 = 2;

/// IPv4 header: field offsets and the checks the program makes.
const IPV4_MIN_HEADER_LEN: usize = 20;
const IPV4_VERSION: u8 = 4;
const IPV4_TOTAL_LEN_AT: usize = 2;
const IPV4_FRAGMENT_AT: usize = 6;
const IPV4_PROTOCOL_AT: usize = 9;
const IPV4_SADDR: std::ops::Range<usize> = 12..16;
const IPV4_DADDR: std::ops::Range<usize> = 16..20;
/// "More fragments" and the fragment offset (DF is not a fragment).
const IPV4_MF_AND_OFFSET: u16 = 0x3fff;
/// The fragment offset alone: 0 in a first fragment.
const IPV4_OFFSET_MASK: u16 = 0x1fff;
const IPV4_ID_AT: usize = 4;
const IPV4_TTL_AT: usize = 8;
const IPV4_CHECKSUM_AT: usize = 10;
/// ICMP: the header (type, code, checksum, 4 more bytes), the types the program acts on.
const ICMP_HEADER_LEN: usize = 8;
const ICMP_CHECKSUM_AT: usize = 2;
const ICMP_ECHO_REPLY: u8 = 0;
const ICMP_DEST_UNREACHABLE: u8 = 3;
const ICMP_ECHO_REQUEST: u8 = 8;
const ICMP_TIME_EXCEEDED: u8 = 11;
/// An ICMP error must quote this much past the quoted IP header to be relayed.
const ICMP_QUOTED_L4_LEN: usize = 8;
/// IPv6: the fixed header, its fields, and the extension headers the program walks.
const IPV6_HEADER_LEN: usize = 40;
const IPV6_VERSION: u8 = 6;
const IPV6_PAYLOAD_LEN_AT: usize = 4;
const IPV6_NEXT_HEADER_AT: usize = 6;
const IPV6_HOP_LIMIT_AT: usize = 7;
const IPV6_SADDR: std::ops::Range<usize> = 8..24;
const IPV6_DADDR: std::ops::Range<usize> = 24..40;
const IPV6_HOP_BY_HOP: u8 = 0;
const IPV6_ROUTING: u8 = 43;
/// RFC 8200 4.4: next header, length, routing type, segments left.
const IPV6_ROUTING_SEGMENTS_LEFT_AT: usize = 3;
const IPV6_FRAGMENT: u8 = 44;
const IPV6_DESTINATION_OPTIONS: u8 = 60;
/// Extension headers are 8-byte units; every one is at least one.
const IPV6_EXTENSION_UNIT: usize = 8;
const IPV6_FRAGMENT_OFFSET_MASK: u16 = 0xfff8;
const IPV6_FRAGMENT_MORE: u16 = 0x0001;
/// ICMPv6 types the program acts on, and neighbour discovery, which it leaves to the stack.
const ICMPV6_DEST_UNREACHABLE: u8 = 1;
const ICMPV6_PACKET_TOO_BIG: u8 = 2;
const ICMPV6_TIME_EXCEEDED: u8 = 3;
const ICMPV6_ECHO_REQUEST: u8 = 128;
const ICMPV6_ECHO_REPLY: u8 = 129;
const ICMPV6_NDP: std::ops::RangeInclusive<u8> = 133..=137;
const TCP_HEADER_LEN: usize = 20;
const UDP_HEADER_LEN: usize = 8;
/// TCP and UDP both start with the two ports.
const PORTS_LEN: usize = 4;

/// Where frames for a backend go: the new MACs and the egress interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendTarget {
    pub dst_mac: Mac,
    pub src_mac: Mac,
    pub ifindex: u32,
}

/// One service (VIP, port, protocol) as the director runs it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceState {
    /// Which instance of the service this is: a flow remembered under another id (the service
    /// was removed and added again, or its key given to another service) is scheduled again.
    pub id: u32,
    pub vip: IpAddr,
    pub port: u16,
    pub protocol: u8,
    /// Schedule by the client address alone, else by the 5-tuple.
    pub source_hash: bool,
    /// A standby director drops the service's traffic.
    pub standby: bool,
    /// Backend ids by slot; empty: no backend, new flows are dropped.
    pub table: Vec<u32>,
    /// Backend id -> where its frames go; `None` (or no entry): removed or unusable, its flows
    /// are scheduled again. A backend here but not in `table` is drained.
    pub backends: BTreeMap<u32, Option<BackendTarget>>,
}

impl ServiceState {
    fn target(&self, backend_id: u32) -> Option<BackendTarget> {
        self.backends.get(&backend_id).copied().flatten()
    }
}

/// What the director knows, independent of how the program's maps hold it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// The interfaces the program runs on: ifindex -> MAC.
    pub interfaces: BTreeMap<u32, Mac>,
    /// The interfaces a frame may be redirected to (devmap members).
    pub egress_ifindexes: BTreeSet<u32>,
    /// VIP -> active (answers ARP). Standby VIPs are still VIPs: their fragments are dropped.
    pub vips: BTreeMap<IpAddr, bool>,
    /// VIPs that are also addresses of the director (`VIP_FLAG_LOCAL`): traffic to them that
    /// is no service passes to the stack (to other VIPs it is dropped, `drop_no_service`), and
    /// ARP requests for them are dropped while they are standby (`drop_arp_standby`).
    #[serde(default)]
    pub local_vips: BTreeSet<IpAddr>,
    pub services: Vec<ServiceState>,
}

impl State {
    fn service(&self, daddr: IpAddr, dport: u16, protocol: u8) -> Option<&ServiceState> {
        self.services
            .iter()
            .find(|s| s.vip == daddr && s.port == dport && s.protocol == protocol)
    }
}

/// Rules that differ between program versions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    /// Service traffic is forwarded, and ARP requests answered, only when the frame is
    /// addressed to the ingress interface's MAC (ARP: or broadcast); otherwise passed.
    pub require_our_dst_mac: bool,
}

/// The kernel's `enum xdp_action` (include/uapi/linux/bpf.h).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpAction {
    Aborted = 0,
    Drop = 1,
    Pass = 2,
    Tx = 3,
    Redirect = 4,
}

impl XdpAction {
    pub const ALL: [Self; 5] = [
        Self::Aborted,
        Self::Drop,
        Self::Pass,
        Self::Tx,
        Self::Redirect,
    ];

    /// The action a program's return value names, if any.
    #[must_use]
    pub fn from_return_value(value: u32) -> Option<Self> {
        Self::ALL.into_iter().find(|a| *a as u32 == value)
    }

    /// How the program turns each verdict into an action.
    #[must_use]
    pub const fn of(verdict: Verdict) -> Self {
        match verdict {
            Verdict::Tx | Verdict::ArpReply | Verdict::EchoReply | Verdict::NdpReply => Self::Tx,
            Verdict::Redirect => Self::Redirect,
            Verdict::Pass => Self::Pass,
            Verdict::DropMalformed
            | Verdict::DropFragment
            | Verdict::DropNoBackend
            | Verdict::DropNoEgress
            | Verdict::DropStandby
            | Verdict::DropNoService
            | Verdict::DropArpStandby
            | Verdict::DropFragmentOrphan
            | Verdict::DropNdpStandby => Self::Drop,
            Verdict::Aborted => Self::Aborted,
        }
    }
}

/// What running a frame through the program gives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// BPF_PROG_TEST_RUN refuses (EINVAL) frames shorter than an Ethernet header: the program
    /// never runs and nothing is counted.
    Refused,
    Ran {
        action: XdpAction,
        /// The one verdict counter the frame adds itself to.
        verdict: Verdict,
        /// The frame as the program leaves it.
        output: Vec<u8>,
    },
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Refused => write!(f, "refused by the kernel (EINVAL)"),
            Self::Ran {
                action,
                verdict,
                output,
            } => write!(
                f,
                "{action:?} ({}), {}-byte output {}",
                verdict.name(),
                output.len(),
                hex(output)
            ),
        }
    }
}

/// A frame's bytes as lowercase hex, no separators.
#[must_use]
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The key of a flow: its 5-tuple, IPv4 or IPv6 (the program keeps them in two tables).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FlowTuple {
    pub saddr: IpAddr,
    pub daddr: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub protocol: u8,
}

/// What the flow table remembers of a flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Remembered {
    pub service_id: u32,
    pub backend_id: u32,
}

/// What identifies a datagram's fragments: IPv4: source, destination, IP id, protocol; IPv6:
/// source, destination, the Fragment header's id (`protocol` 0: IPv6's key has none).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FragmentKey {
    pub saddr: IpAddr,
    pub daddr: IpAddr,
    pub id: u32,
    pub protocol: u8,
}

/// Where a datagram's first fragment went; `stale` once that service instance ended (the
/// program keeps the entry, with a generation no live service has).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FragmentEntry {
    remembered: Remembered,
    stale: bool,
}

/// How often the model took the flow table's paths: shows that a run reached them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowPaths {
    /// A remembered flow kept its backend.
    pub kept: u64,
    /// ... a backend no longer in the table (drained, or the table changed).
    pub kept_off_table: u64,
    /// A new flow was scheduled and remembered.
    pub scheduled: u64,
    /// A remembered flow was scheduled again: its backend was removed.
    pub rescheduled_backend_gone: u64,
    /// ... the service was replaced by another instance.
    pub rescheduled_service_replaced: u64,
}

/// The model: the rules plus its mirror of the program's flow table.
#[derive(Clone, Debug)]
pub struct Model {
    options: Options,
    flows: HashMap<FlowTuple, Remembered>,
    /// The mirror of the program's `FRAGMENTS` map.
    fragments: HashMap<FragmentKey, FragmentEntry>,
    paths: FlowPaths,
}

/// Why a packet has no flow (the program's `parse::Unroutable`).
enum Unroutable {
    NotBalanced(IpAddr),
    /// A later fragment (offset > 0).
    Fragment(IpAddr, FragmentKey),
    /// A whole ICMP (ICMPv6) packet: destination, where the ICMP header starts, its length
    /// with payload.
    Icmp(IpAddr, usize, usize),
    Truncated(IpAddr),
    Malformed,
}

/// The network layer behind the Ethernet header and any tags, with its offset.
enum L3 {
    Arp(usize),
    Ipv4(usize),
    Ipv6(usize),
    Other,
}

impl Model {
    #[must_use]
    pub fn new(options: Options) -> Self {
        Self {
            options,
            flows: HashMap::new(),
            fragments: HashMap::new(),
            paths: FlowPaths::default(),
        }
    }

    #[must_use]
    pub const fn flow_paths(&self) -> FlowPaths {
        self.paths
    }

    #[must_use]
    pub const fn options(&self) -> Options {
        self.options
    }

    /// Flows remembered so far.
    #[must_use]
    pub fn flow_count(&self) -> usize {
        self.flows.len()
    }

    /// Fragmented datagrams remembered so far.
    #[must_use]
    pub fn fragment_count(&self) -> usize {
        self.fragments.len()
    }

    #[must_use]
    pub fn remembered(&self, tuple: &FlowTuple) -> Option<Remembered> {
        self.flows.get(tuple).copied()
    }

    /// Runs `frame`, arriving on `ingress_ifindex`, through the model, updating its flow table.
    pub fn process(&mut self, state: &State, ingress_ifindex: u32, frame: &[u8]) -> Outcome {
        if frame.len() < ETH_HEADER_LEN {
            return Outcome::Refused;
        }
        let mut output = frame.to_vec();
        // The interface a frame arrives on is (ingress, its VLAN); the state's interfaces are
        // untagged, so a tagged frame is on no interface of the director.
        let verdict = match ethernet(frame) {
            Err(verdict) => verdict,
            Ok((L3::Arp(offset), vlan)) => {
                self.arp(state, (ingress_ifindex, vlan), &mut output, offset)
            }
            Ok((L3::Ipv4(offset), vlan)) => {
                let parsed = ipv4_flow(frame, offset);
                self.ip(state, (ingress_ifindex, vlan), &mut output, offset, parsed)
            }
            Ok((L3::Ipv6(offset), vlan)) => {
                // Neighbour discovery for a VIP first, as the program does; then forwarding.
                match crate::model_ndp::handle(state, (ingress_ifindex, vlan), &mut output, offset)
                {
                    Some(verdict) => verdict,
                    None => {
                        let parsed = ipv6_flow(frame, offset);
                        self.ip(state, (ingress_ifindex, vlan), &mut output, offset, parsed)
                    }
                }
            }
            Ok((L3::Other, _)) => Verdict::Pass,
        };
        Outcome::Ran {
            action: XdpAction::of(verdict),
            verdict,
            output,
        }
    }

    /// ARP: a request for an active VIP is turned into the reply; anything else passes.
    fn arp(&self, state: &State, ingress: Ingress, frame: &mut [u8], offset: usize) -> Verdict {
        let Some(arp) = frame.get(offset..offset + ARP_LEN) else {
            return Verdict::Pass;
        };
        let is_request = be16(arp, ARP_HTYPE_AT) == ARP_HTYPE_ETHERNET
            && be16(arp, ARP_PTYPE_AT) == ARP_PTYPE_IPV4
            && arp[ARP_HLEN_AT] == ARP_HLEN_ETHERNET
            && arp[ARP_PLEN_AT] == ARP_PLEN_IPV4
            && be16(arp, ARP_OPER_AT) == ARP_OP_REQUEST;
        if !is_request {
            return Verdict::Pass;
        }
        let requester_mac: Mac = arp[ARP_SHA].try_into().expect("6 bytes");
        let requester_ip: [u8; 4] = arp[ARP_SPA].try_into().expect("4 bytes");
        let vip: [u8; 4] = arp[ARP_TPA].try_into().expect("4 bytes");
        let vip_addr = IpAddr::V4(Ipv4Addr::from(vip));
        let Some(&active) = state.vips.get(&vip_addr) else {
            return Verdict::Pass;
        };
        // A standby VIP the kernel holds: no request for it reaches the kernel.
        if !active {
            return if state.local_vips.contains(&vip_addr) {
                Verdict::DropArpStandby
            } else {
                Verdict::Pass
            };
        }
        // Announcements (sender IP = target IP) and requests from group MACs are not answered.
        if requester_ip == vip || requester_mac[0] & MAC_GROUP_BIT != 0 {
            return Verdict::Pass;
        }
        // Untagged on a trunk, or a VLAN not served: not ours to answer.
        let Some(our_mac) = interface(state, ingress) else {
            return Verdict::Pass;
        };
        if self.options.require_our_dst_mac {
            let dst: Mac = frame[ETH_DST].try_into().expect("6 bytes");
            if dst != BROADCAST && dst != our_mac {
                return Verdict::Pass;
            }
        }
        frame[ETH_DST].copy_from_slice(&requester_mac);
        frame[ETH_SRC].copy_from_slice(&our_mac);
        let arp = &mut frame[offset..offset + ARP_LEN];
        arp[ARP_OPER_AT..ARP_OPER_AT + 2].copy_from_slice(&ARP_OP_REPLY.to_be_bytes());
        arp[ARP_THA].copy_from_slice(&requester_mac);
        arp[ARP_TPA].copy_from_slice(&requester_ip);
        arp[ARP_SHA].copy_from_slice(&our_mac);
        arp[ARP_SPA].copy_from_slice(&vip);
        Verdict::ArpReply
    }

    /// The verdict of a frame for a service that is not ours to forward: `Pass` when it
    /// arrived on no interface of the director (a VLAN not served) or was sent to another MAC;
    /// `None` when it is ours (or the MAC rule is off).
    fn not_ours(&self, state: &State, ingress: Ingress, frame: &[u8]) -> Option<Verdict> {
        let Some(our_mac) = interface(state, ingress) else {
            return Some(Verdict::Pass);
        };
        if !self.options.require_our_dst_mac {
            return None;
        }
        let dst: Mac = frame[ETH_DST].try_into().expect("6 bytes");
        (dst != our_mac).then_some(Verdict::Pass)
    }

    /// A packet that is no service's: dropped when it is addressed to a VIP that is not one of
    /// the director's addresses and sent to us; passed otherwise.
    fn no_service(&self, state: &State, ingress: Ingress, frame: &[u8], daddr: IpAddr) -> Verdict {
        if !is_vip(state, daddr) || state.local_vips.contains(&daddr) {
            return Verdict::Pass;
        }
        self.not_ours(state, ingress, frame)
            .unwrap_or(Verdict::DropNoService)
    }

    /// `verdict` for a packet to a VIP sent to us, `Pass` for any other.
    fn drop_if_ours(
        &self,
        state: &State,
        ingress: Ingress,
        frame: &[u8],
        daddr: IpAddr,
        verdict: Verdict,
    ) -> Verdict {
        if !is_vip(state, daddr) {
            return Verdict::Pass;
        }
        self.not_ours(state, ingress, frame).unwrap_or(verdict)
    }

    /// IPv4 or IPv6 (`parsed`, its IP header at `offset`): TCP/UDP service traffic is
    /// forwarded to a backend; the rest passes or is dropped.
    fn ip(
        &mut self,
        state: &State,
        ingress: Ingress,
        frame: &mut [u8],
        offset: usize,
        parsed: Result<(FlowTuple, Option<u32>), Unroutable>,
    ) -> Verdict {
        let (flow, first_fragment_id) = match parsed {
            Ok(flow) => flow,
            Err(Unroutable::NotBalanced(daddr)) => {
                return self.no_service(state, ingress, frame, daddr);
            }
            Err(Unroutable::Icmp(daddr, l4_offset, l4_len)) => {
                return self.icmp(state, ingress, frame, offset, daddr, l4_offset, l4_len);
            }
            Err(Unroutable::Fragment(daddr, key)) => {
                return self.later_fragment(state, ingress, frame, daddr, key);
            }
            Err(Unroutable::Truncated(daddr)) => {
                return self.drop_if_ours(state, ingress, frame, daddr, Verdict::DropMalformed);
            }
            Err(Unroutable::Malformed) => return Verdict::DropMalformed,
        };
        let Some(service) = state.service(flow.daddr, flow.dport, flow.protocol) else {
            return self.no_service(state, ingress, frame, flow.daddr);
        };
        // Only frames sent to the ingress interface's MAC are forwarded: after the service
        // lookup, before standby. A frame on no interface of the director (a VLAN not served)
        // passes.
        if let Some(verdict) = self.not_ours(state, ingress, frame) {
            return verdict;
        }
        if service.standby {
            return Verdict::DropStandby;
        }
        let (backend_id, target) = match self.backend(service, &flow) {
            Ok(chosen) => chosen,
            Err(verdict) => return verdict,
        };
        if let Some(id) = first_fragment_id {
            let key = FragmentKey {
                saddr: flow.saddr,
                daddr: flow.daddr,
                id,
                protocol: if flow.daddr.is_ipv4() {
                    flow.protocol
                } else {
                    0
                },
            };
            let remembered = Remembered {
                service_id: service.id,
                backend_id,
            };
            self.fragments.insert(
                key,
                FragmentEntry {
                    remembered,
                    stale: false,
                },
            );
        }
        send(state, ingress, frame, target)
    }

    /// A later fragment: where its first fragment went, if that was seen and its service is
    /// the same instance.
    fn later_fragment(
        &self,
        state: &State,
        ingress: Ingress,
        frame: &mut [u8],
        daddr: IpAddr,
        key: FragmentKey,
    ) -> Verdict {
        if !is_vip(state, daddr) {
            return Verdict::Pass;
        }
        if let Some(verdict) = self.not_ours(state, ingress, frame) {
            return verdict;
        }
        let Some(entry) = self.fragments.get(&key) else {
            return Verdict::DropFragmentOrphan;
        };
        let service = state
            .services
            .iter()
            .find(|s| s.id == entry.remembered.service_id);
        let Some(service) = service.filter(|_| !entry.stale) else {
            return Verdict::DropFragment;
        };
        if service.standby {
            return Verdict::DropStandby;
        }
        let Some(target) = service.target(entry.remembered.backend_id) else {
            return Verdict::DropNoBackend;
        };
        send(state, ingress, frame, target)
    }

    /// ICMP to `daddr`: an echo request to a VIP answered, an error quoting a service flow
    /// relayed to the flow's backend, the rest no service's.
    #[allow(clippy::too_many_arguments)]
    fn icmp(
        &self,
        state: &State,
        ingress: Ingress,
        frame: &mut [u8],
        ip_offset: usize,
        daddr: IpAddr,
        l4_offset: usize,
        l4_len: usize,
    ) -> Verdict {
        let Some(&active) = state.vips.get(&daddr) else {
            return Verdict::Pass;
        };
        let answer = if l4_len < ICMP_HEADER_LEN {
            None
        } else if daddr.is_ipv4() {
            match (frame[l4_offset], frame[l4_offset + 1]) {
                (ICMP_ECHO_REQUEST, 0) => {
                    self.echo(state, ingress, frame, active, ip_offset, l4_offset)
                }
                (ICMP_DEST_UNREACHABLE | ICMP_TIME_EXCEEDED, _) => {
                    self.relay(state, ingress, frame, daddr, l4_offset, l4_len)
                }
                _ => None,
            }
        } else {
            match (frame[l4_offset], frame[l4_offset + 1]) {
                (kind, _) if ICMPV6_NDP.contains(&kind) => Some(Verdict::Pass),
                // A reply is the request turned around: only without extension headers.
                (ICMPV6_ECHO_REQUEST, 0) if l4_offset == ip_offset + IPV6_HEADER_LEN => {
                    self.echo(state, ingress, frame, active, ip_offset, l4_offset)
                }
                (ICMPV6_ECHO_REQUEST, 0) => None,
                (ICMPV6_DEST_UNREACHABLE | ICMPV6_PACKET_TOO_BIG | ICMPV6_TIME_EXCEEDED, _) => {
                    self.relay(state, ingress, frame, daddr, l4_offset, l4_len)
                }
                _ => None,
            }
        };
        answer.unwrap_or_else(|| self.no_service(state, ingress, frame, daddr))
    }

    fn echo(
        &self,
        state: &State,
        ingress: Ingress,
        frame: &mut [u8],
        active: bool,
        ip_offset: usize,
        l4_offset: usize,
    ) -> Option<Verdict> {
        let requester: Mac = frame[ETH_SRC].try_into().expect("6 bytes");
        if requester[0] & MAC_GROUP_BIT != 0 {
            return None;
        }
        if let Some(verdict) = self.not_ours(state, ingress, frame) {
            return Some(verdict);
        }
        let Some(our_mac) = interface(state, ingress) else {
            return Some(Verdict::Aborted);
        };
        if !active {
            return Some(Verdict::DropStandby);
        }
        frame[ETH_DST].copy_from_slice(&requester);
        frame[ETH_SRC].copy_from_slice(&our_mac);
        let ip = &mut frame[ip_offset..];
        let reply_type = if ip[0] >> 4 == IPV4_VERSION {
            let saddr: [u8; 4] = ip[IPV4_SADDR].try_into().expect("4 bytes");
            let daddr: [u8; 4] = ip[IPV4_DADDR].try_into().expect("4 bytes");
            ip[IPV4_SADDR].copy_from_slice(&daddr);
            ip[IPV4_DADDR].copy_from_slice(&saddr);
            let old = be16(ip, IPV4_TTL_AT);
            ip[IPV4_TTL_AT] = ECHO_REPLY_TTL;
            update_checksum(ip, IPV4_CHECKSUM_AT, old, be16(ip, IPV4_TTL_AT));
            ICMP_ECHO_REPLY
        } else {
            // No IPv6 header checksum; ICMPv6's pseudo-header sum is unchanged by the swap.
            let saddr: [u8; 16] = ip[IPV6_SADDR].try_into().expect("16 bytes");
            let daddr: [u8; 16] = ip[IPV6_DADDR].try_into().expect("16 bytes");
            ip[IPV6_SADDR].copy_from_slice(&daddr);
            ip[IPV6_DADDR].copy_from_slice(&saddr);
            ip[IPV6_HOP_LIMIT_AT] = ECHO_REPLY_TTL;
            ICMPV6_ECHO_REPLY
        };
        let icmp = &mut frame[l4_offset..];
        let old = be16(icmp, 0);
        icmp[0] = reply_type;
        update_checksum(icmp, ICMP_CHECKSUM_AT, old, be16(icmp, 0));
        Some(Verdict::EchoReply)
    }

    /// An ICMP error to the VIP `daddr` quoting a TCP/UDP packet from that VIP: the flow it
    /// answers is the quote reversed; relayed to that flow's backend, nothing remembered.
    fn relay(
        &self,
        state: &State,
        ingress: Ingress,
        frame: &mut [u8],
        daddr: IpAddr,
        l4_offset: usize,
        l4_len: usize,
    ) -> Option<Verdict> {
        let flow = match daddr {
            IpAddr::V4(vip) => quoted_flow_v4(frame, vip, l4_offset, l4_len)?,
            IpAddr::V6(vip) => quoted_flow_v6(frame, vip, l4_offset, l4_len)?,
        };
        let service = state.service(flow.daddr, flow.dport, flow.protocol)?;
        if let Some(verdict) = self.not_ours(state, ingress, frame) {
            return Some(verdict);
        }
        if service.standby {
            return Some(Verdict::DropStandby);
        }
        Some(match self.backend_of(service, &flow) {
            Ok(target) => send(state, ingress, frame, target),
            Err(verdict) => verdict,
        })
    }

    /// The backend the flow has or would be given, without remembering anything.
    fn backend_of(
        &self,
        service: &ServiceState,
        flow: &FlowTuple,
    ) -> Result<BackendTarget, Verdict> {
        if let Some(remembered) = self.flows.get(flow)
            && remembered.service_id == service.id
            && let Some(target) = service.target(remembered.backend_id)
        {
            return Ok(target);
        }
        let backend_id = scheduled(service, flow)?;
        service.target(backend_id).ok_or(Verdict::DropNoBackend)
    }

    /// The director's state changed from `previous` to `new`: flows of a service instance that
    /// ended (removed, or its id given a new key) are forgotten. The program remembers a
    /// flow with its service's generation, which a service added again under the same id does
    /// not share, so such flows are scheduled anew even when the id comes back.
    pub fn state_changed(&mut self, previous: &State, new: &State) {
        let ended: BTreeSet<u32> = previous
            .services
            .iter()
            .filter(|p| {
                !new.services.iter().any(|n| {
                    n.id == p.id && (n.vip, n.port, n.protocol) == (p.vip, p.port, p.protocol)
                })
            })
            .map(|p| p.id)
            .collect();
        self.flows.retain(|_, r| !ended.contains(&r.service_id));
        for entry in self.fragments.values_mut() {
            entry.stale |= ended.contains(&entry.remembered.service_id);
        }
    }

    /// The flow's backend: the remembered one while it is still usable and the service the
    /// same instance, else the table's choice, which is then remembered.
    fn backend(
        &mut self,
        service: &ServiceState,
        flow: &FlowTuple,
    ) -> Result<(u32, BackendTarget), Verdict> {
        let remembered = self.flows.get(flow).copied();
        if let Some(remembered) = remembered {
            if remembered.service_id != service.id {
                self.paths.rescheduled_service_replaced += 1;
            } else if let Some(target) = service.target(remembered.backend_id) {
                self.paths.kept += 1;
                if !service.table.contains(&remembered.backend_id) {
                    self.paths.kept_off_table += 1;
                }
                return Ok((remembered.backend_id, target));
            } else {
                self.paths.rescheduled_backend_gone += 1;
            }
        }
        let backend_id = scheduled(service, flow)?;
        // A table entry naming an unusable backend: dropped, and nothing remembered.
        let target = service.target(backend_id).ok_or(Verdict::DropNoBackend)?;
        if remembered.is_none() {
            self.paths.scheduled += 1;
        }
        self.flows.insert(
            *flow,
            Remembered {
                service_id: service.id,
                backend_id,
            },
        );
        Ok((backend_id, target))
    }
}

/// The backend id the service's table gives a flow.
fn scheduled(service: &ServiceState, flow: &FlowTuple) -> Result<u32, Verdict> {
    if service.table.is_empty() {
        return Err(Verdict::DropNoBackend);
    }
    let hash = match (flow.saddr, flow.daddr) {
        (IpAddr::V4(saddr), _) if service.source_hash => source_hash_v4(saddr.to_bits()),
        (IpAddr::V6(saddr), _) if service.source_hash => source_hash_v6(ipv6_words(saddr.octets())),
        (IpAddr::V4(saddr), IpAddr::V4(daddr)) => flow_hash_v4(
            saddr.to_bits(),
            daddr.to_bits(),
            flow.sport,
            flow.dport,
            flow.protocol,
        ),
        (IpAddr::V6(saddr), IpAddr::V6(daddr)) => flow_hash_v6(
            ipv6_words(saddr.octets()),
            ipv6_words(daddr.octets()),
            flow.sport,
            flow.dport,
            flow.protocol,
        ),
        _ => unreachable!("a flow's addresses share a family"),
    };
    let slots = u32::try_from(service.table.len()).expect("a table fits u32");
    Ok(service.table[usize::try_from(hash % slots).expect("fits usize")])
}

/// Only the MACs change, also on a frame dropped for want of an egress (it never leaves).
fn send(state: &State, ingress: Ingress, frame: &mut [u8], target: BackendTarget) -> Verdict {
    frame[ETH_DST].copy_from_slice(&target.dst_mac);
    frame[ETH_SRC].copy_from_slice(&target.src_mac);
    if target.ifindex == ingress.0 {
        Verdict::Tx
    } else if state.egress_ifindexes.contains(&target.ifindex) {
        Verdict::Redirect
    } else {
        Verdict::DropNoEgress
    }
}

/// The checksum at `at` in `bytes` after a 16-bit word it covers went from `old` to `new`,
/// updated incrementally as RFC 1624 (eqn. 3) says, so a wrong checksum stays as wrong.
fn update_checksum(bytes: &mut [u8], at: usize, old: u16, new: u16) {
    let check = be16(bytes, at);
    let mut sum = u32::from(!check) + u32::from(!old) + u32::from(new);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    let check = !u16::try_from(sum).expect("folded to 16 bits");
    bytes[at..at + 2].copy_from_slice(&check.to_be_bytes());
}

/// The 5-tuple the program would look a frame up by, if it gets that far.
#[must_use]
pub fn flow_tuple(frame: &[u8]) -> Option<FlowTuple> {
    if frame.len() < ETH_HEADER_LEN {
        return None;
    }
    match ethernet(frame) {
        Ok((L3::Ipv4(offset), _)) => ipv4_flow(frame, offset).ok().map(|(tuple, _)| tuple),
        Ok((L3::Ipv6(offset), _)) => ipv6_flow(frame, offset).ok().map(|(tuple, _)| tuple),
        _ => None,
    }
}

fn be16(bytes: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([bytes[at], bytes[at + 1]])
}

/// The network layer and the VLAN id of a frame: one 802.1Q tag is read; a second tag, or an
/// 802.1ad one, makes the frame a provider's (`Other`: passed).
fn ethernet(frame: &[u8]) -> Result<(L3, u16), Verdict> {
    let mut ether_type = be16(frame, ETH_TYPE_AT);
    let mut offset = ETH_HEADER_LEN;
    let mut vlan = NO_VLAN;
    if ether_type == ETHERTYPE_8021Q {
        if frame.len() < offset + VLAN_TAG_LEN {
            return Err(Verdict::DropMalformed);
        }
        vlan = be16(frame, offset) & VLAN_VID_MASK;
        ether_type = be16(frame, offset + VLAN_INNER_TYPE_AT);
        offset += VLAN_TAG_LEN;
    }
    let l3 = match ether_type {
        ETHERTYPE_ARP => L3::Arp(offset),
        ETHERTYPE_IPV4 => L3::Ipv4(offset),
        ETHERTYPE_IPV6 => L3::Ipv6(offset),
        _ => L3::Other,
    };
    Ok((l3, vlan))
}

/// Where a frame arrived: (ifindex, VLAN id).
pub type Ingress = (u32, u16);

/// The MAC of the interface a frame arrived on, if the director serves it.
pub fn interface(state: &State, (ifindex, vlan): Ingress) -> Option<Mac> {
    if vlan != NO_VLAN {
        return None;
    }
    state.interfaces.get(&ifindex).copied()
}

/// The flow of a whole packet or a first fragment, and the IP id of a first fragment.
fn ipv4_flow(frame: &[u8], offset: usize) -> Result<(FlowTuple, Option<u32>), Unroutable> {
    let ip = frame
        .get(offset..offset + IPV4_MIN_HEADER_LEN)
        .ok_or(Unroutable::Malformed)?;
    let header_len = usize::from(ip[0] & 0x0f) * 4;
    let total_len = usize::from(be16(ip, IPV4_TOTAL_LEN_AT));
    // Ethernet padding may make the frame longer than the packet, never shorter.
    if ip[0] >> 4 != IPV4_VERSION
        || header_len < IPV4_MIN_HEADER_LEN
        || total_len < header_len
        || offset + total_len > frame.len()
    {
        return Err(Unroutable::Malformed);
    }
    let protocol = ip[IPV4_PROTOCOL_AT];
    let daddr = IpAddr::V4(Ipv4Addr::from(
        <[u8; 4]>::try_from(&ip[IPV4_DADDR]).expect("4 bytes"),
    ));
    let saddr = IpAddr::V4(Ipv4Addr::from(
        <[u8; 4]>::try_from(&ip[IPV4_SADDR]).expect("4 bytes"),
    ));
    let fragment = be16(ip, IPV4_FRAGMENT_AT);
    let l4_len = match protocol {
        IPPROTO_TCP => TCP_HEADER_LEN,
        IPPROTO_UDP => UDP_HEADER_LEN,
        IPPROTO_ICMP if fragment & IPV4_MF_AND_OFFSET == 0 => {
            return Err(Unroutable::Icmp(
                daddr,
                offset + header_len,
                total_len - header_len,
            ));
        }
        _ => return Err(Unroutable::NotBalanced(daddr)),
    };
    let mut first_fragment_id = None;
    if fragment & IPV4_MF_AND_OFFSET != 0 {
        let id = u32::from(be16(ip, IPV4_ID_AT));
        if fragment & IPV4_OFFSET_MASK != 0 {
            let key = FragmentKey {
                saddr,
                daddr,
                id,
                protocol,
            };
            return Err(Unroutable::Fragment(daddr, key));
        }
        first_fragment_id = Some(id);
    }
    if header_len + l4_len > total_len {
        return Err(Unroutable::Truncated(daddr));
    }
    let ports = frame
        .get(offset + header_len..offset + header_len + PORTS_LEN)
        .ok_or(Unroutable::Truncated(daddr))?;
    let tuple = FlowTuple {
        saddr,
        daddr,
        sport: be16(ports, 0),
        dport: be16(ports, 2),
        protocol,
    };
    Ok((tuple, first_fragment_id))
}

/// The flow of a whole IPv6 packet or a first fragment, and the Fragment header's id of a first
/// fragment: the fixed header, then at most [`MAX_IPV6_EXTENSION_HEADERS`] extension headers.
fn ipv6_flow(frame: &[u8], offset: usize) -> Result<(FlowTuple, Option<u32>), Unroutable> {
    let ip = frame
        .get(offset..offset + IPV6_HEADER_LEN)
        .ok_or(Unroutable::Malformed)?;
    let payload_len = usize::from(be16(ip, IPV6_PAYLOAD_LEN_AT));
    if ip[0] >> 4 != IPV6_VERSION || offset + IPV6_HEADER_LEN + payload_len > frame.len() {
        return Err(Unroutable::Malformed);
    }
    let saddr = IpAddr::V6(Ipv6Addr::from(
        <[u8; 16]>::try_from(&ip[IPV6_SADDR]).expect("16"),
    ));
    let daddr = Ipv6Addr::from(<[u8; 16]>::try_from(&ip[IPV6_DADDR]).expect("16"));
    // Never on the wire (RFC 4291 2.5.5.2); IPv4 VIPs' keys have that form.
    if daddr.to_ipv4_mapped().is_some() {
        return Err(Unroutable::Malformed);
    }
    let daddr = IpAddr::V6(daddr);
    let packet_end = offset + IPV6_HEADER_LEN + payload_len;
    let mut next = ip[IPV6_NEXT_HEADER_AT];
    let mut at = offset + IPV6_HEADER_LEN;
    let mut first_fragment_id = None;
    let mut is_fragment = false;
    for _ in 0..MAX_IPV6_EXTENSION_HEADERS {
        if !matches!(
            next,
            IPV6_HOP_BY_HOP | IPV6_ROUTING | IPV6_FRAGMENT | IPV6_DESTINATION_OPTIONS
        ) {
            break;
        }
        if at > MAX_HEADER_OFFSET || at + IPV6_EXTENSION_UNIT > packet_end {
            return Err(Unroutable::Truncated(daddr));
        }
        let header = &frame[at..at + IPV6_EXTENSION_UNIT];
        // Segments left: the destination is a waypoint, the packet is not the service's.
        if next == IPV6_ROUTING && header[IPV6_ROUTING_SEGMENTS_LEFT_AT] != 0 {
            return Err(Unroutable::NotBalanced(daddr));
        }
        if next == IPV6_FRAGMENT {
            let field = be16(header, 2);
            let id = u32::from_be_bytes(header[4..8].try_into().expect("4 bytes"));
            if field & IPV6_FRAGMENT_OFFSET_MASK != 0 {
                return Err(match header[0] {
                    protocol @ (IPPROTO_TCP | IPPROTO_UDP) => {
                        let key = FragmentKey {
                            saddr,
                            daddr,
                            id,
                            protocol: 0,
                        };
                        let _ = protocol;
                        Unroutable::Fragment(daddr, key)
                    }
                    _ => Unroutable::NotBalanced(daddr),
                });
            }
            is_fragment = field & IPV6_FRAGMENT_MORE != 0;
            if is_fragment {
                first_fragment_id = Some(id);
            }
            at += IPV6_EXTENSION_UNIT;
        } else {
            at += (usize::from(header[1]) + 1) * IPV6_EXTENSION_UNIT;
        }
        next = header[0];
    }
    if at > MAX_HEADER_OFFSET || at > packet_end {
        return Err(Unroutable::Truncated(daddr));
    }
    let l4_len = match next {
        IPPROTO_TCP => TCP_HEADER_LEN,
        IPPROTO_UDP => UDP_HEADER_LEN,
        IPPROTO_ICMPV6 if !is_fragment => {
            return Err(Unroutable::Icmp(daddr, at, packet_end - at));
        }
        IPV6_HOP_BY_HOP | IPV6_ROUTING | IPV6_FRAGMENT | IPV6_DESTINATION_OPTIONS => {
            return Err(Unroutable::Truncated(daddr));
        }
        _ => return Err(Unroutable::NotBalanced(daddr)),
    };
    if at + l4_len > packet_end {
        return Err(Unroutable::Truncated(daddr));
    }
    let tuple = FlowTuple {
        saddr,
        daddr,
        sport: be16(frame, at),
        dport: be16(frame, at + 2),
        protocol: next,
    };
    Ok((tuple, first_fragment_id))
}

/// The flow an ICMP error to `vip` answers: the quoted IPv4 packet (from the VIP, TCP/UDP, not
/// a later fragment, with its ports), reversed.
fn quoted_flow_v4(
    frame: &[u8],
    vip: Ipv4Addr,
    l4_offset: usize,
    l4_len: usize,
) -> Option<FlowTuple> {
    if l4_len < ICMP_HEADER_LEN + IPV4_MIN_HEADER_LEN {
        return None;
    }
    let quoted = &frame[l4_offset + ICMP_HEADER_LEN..];
    let header_len = usize::from(quoted[0] & 0x0f) * 4;
    let protocol = quoted[IPV4_PROTOCOL_AT];
    if quoted[0] >> 4 != IPV4_VERSION
        || header_len < IPV4_MIN_HEADER_LEN
        || be16(quoted, IPV4_FRAGMENT_AT) & IPV4_OFFSET_MASK != 0
        || !matches!(protocol, IPPROTO_TCP | IPPROTO_UDP)
        || quoted[IPV4_SADDR] != vip.octets()
        || ICMP_HEADER_LEN + header_len + ICMP_QUOTED_L4_LEN > l4_len
    {
        return None;
    }
    Some(FlowTuple {
        saddr: IpAddr::V4(Ipv4Addr::from(
            <[u8; 4]>::try_from(&quoted[IPV4_DADDR]).expect("4 bytes"),
        )),
        daddr: IpAddr::V4(vip),
        sport: be16(quoted, header_len + 2),
        dport: be16(quoted, header_len),
        protocol,
    })
}

/// As [`quoted_flow_v4`] for ICMPv6: the quoted IPv6 packet's TCP/UDP header must follow its
/// fixed header (extension headers in a quote are not walked).
fn quoted_flow_v6(
    frame: &[u8],
    vip: Ipv6Addr,
    l4_offset: usize,
    l4_len: usize,
) -> Option<FlowTuple> {
    if l4_len < ICMP_HEADER_LEN + IPV6_HEADER_LEN + ICMP_QUOTED_L4_LEN {
        return None;
    }
    let quoted = &frame[l4_offset + ICMP_HEADER_LEN..];
    let protocol = quoted[IPV6_NEXT_HEADER_AT];
    if quoted[0] >> 4 != IPV6_VERSION
        || !matches!(protocol, IPPROTO_TCP | IPPROTO_UDP)
        || quoted[IPV6_SADDR] != vip.octets()
    {
        return None;
    }
    Some(FlowTuple {
        saddr: IpAddr::V6(Ipv6Addr::from(
            <[u8; 16]>::try_from(&quoted[IPV6_DADDR]).expect("16 bytes"),
        )),
        daddr: IpAddr::V6(vip),
        sport: be16(quoted, IPV6_HEADER_LEN + 2),
        dport: be16(quoted, IPV6_HEADER_LEN),
        protocol,
    })
}

/// `verdict` for a packet to a VIP, `Pass` for any other destination.
fn is_vip(state: &State, daddr: IpAddr) -> bool {
    state.vips.contains_key(&daddr)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::{
        Arp, CLIENT_IP, CLIENT_IPV6, CLIENT_PORT, DIRECTOR_MAC, INACTIVE_VIP, IcmpError,
        Icmpv6Error, Ipv4Flow, Ipv4Frame, Ipv6Flow, Ipv6Frame, OTHER_HOST_MAC, OTHER_IP, ROUTER_IP,
        ROUTER_MAC, VIP, VIP_IPV6, backend_mac, icmp_echo_reply, icmp_echo_request, icmp_error,
        icmpv6_echo_reply, icmpv6_echo_request, icmpv6_error, with_fragment, with_ip_id,
    };

    const INGRESS: u32 = 2;
    const OTHER_EGRESS: u32 = 3;
    const UNKNOWN_IFINDEX: u32 = 9;
    const PORT: u16 = 8080;
    const SERVICE_ID: u32 = 7;
    const TABLE_LEN: usize = 13;

    fn target(n: u8, ifindex: u32) -> Option<BackendTarget> {
        Some(BackendTarget {
            dst_mac: backend_mac(n),
            src_mac: DIRECTOR_MAC,
            ifindex,
        })
    }

    /// One TCP service on the VIP whose table holds only `table_backend`, of backends 0..3
    /// (1 behind another interface, 2 behind an unknown one).
    fn state(table_backend: u32) -> State {
        State {
            interfaces: BTreeMap::from([(INGRESS, DIRECTOR_MAC)]),
            egress_ifindexes: BTreeSet::from([INGRESS, OTHER_EGRESS]),
            vips: BTreeMap::from([(VIP.into(), true), (INACTIVE_VIP.into(), false)]),
            local_vips: BTreeSet::new(),
            services: vec![ServiceState {
                id: SERVICE_ID,
                vip: VIP.into(),
                port: PORT,
                protocol: IPPROTO_TCP,
                source_hash: false,
                standby: false,
                table: vec![table_backend; TABLE_LEN],
                backends: BTreeMap::from([
                    (0, target(0, INGRESS)),
                    (1, target(1, OTHER_EGRESS)),
                    (2, target(2, UNKNOWN_IFINDEX)),
                ]),
            }],
        }
    }

    fn model(require_our_dst_mac: bool) -> Model {
        Model::new(Options {
            require_our_dst_mac,
        })
    }

    fn tcp_frame() -> Vec<u8> {
        Ipv4Frame::new(Ipv4Flow::tcp(CLIENT_IP, CLIENT_PORT, VIP, PORT)).build()
    }

    fn verdict_of(outcome: &Outcome) -> Verdict {
        match outcome {
            Outcome::Ran { verdict, .. } => *verdict,
            Outcome::Refused => panic!("the frame was refused"),
        }
    }

    fn forwarded_to(input: &[u8], n: u8) -> Vec<u8> {
        let mut out = input.to_vec();
        out[ETH_DST].copy_from_slice(&backend_mac(n));
        out[ETH_SRC].copy_from_slice(&DIRECTOR_MAC);
        out
    }

    #[test]
    fn service_frame_goes_out_by_the_backends_interface() {
        let frame = tcp_frame();
        for (backend, verdict, action) in [
            (0, Verdict::Tx, XdpAction::Tx),
            (1, Verdict::Redirect, XdpAction::Redirect),
            (2, Verdict::DropNoEgress, XdpAction::Drop),
        ] {
            let outcome = model(false).process(&state(backend), INGRESS, &frame);
            let expected = Outcome::Ran {
                action,
                verdict,
                output: forwarded_to(&frame, u8::try_from(backend).expect("small")),
            };
            assert_eq!(outcome, expected, "backend {backend}");
        }
    }

    #[test]
    fn a_flow_keeps_its_backend_until_it_leaves_or_the_service_is_replaced() {
        let frame = tcp_frame();
        let tuple = flow_tuple(&frame).expect("a TCP frame has a 5-tuple");
        let mut m = model(false);
        assert_eq!(
            verdict_of(&m.process(&state(0), INGRESS, &frame)),
            Verdict::Tx
        );
        // The table now names backend 1, but the flow stays with 0.
        assert_eq!(
            verdict_of(&m.process(&state(1), INGRESS, &frame)),
            Verdict::Tx
        );
        let mut removed = state(1);
        removed.services[0].backends.insert(0, None);
        assert_eq!(
            verdict_of(&m.process(&removed, INGRESS, &frame)),
            Verdict::Redirect
        );
        assert_eq!(m.remembered(&tuple).map(|r| r.backend_id), Some(1));
        let mut replaced = state(0);
        replaced.services[0].id = SERVICE_ID + 1;
        assert_eq!(
            verdict_of(&m.process(&replaced, INGRESS, &frame)),
            Verdict::Tx
        );
        assert_eq!(m.remembered(&tuple).map(|r| r.backend_id), Some(0));
    }

    #[test]
    fn standby_and_unusable_table_entries_drop_and_remember_nothing() {
        let frame = tcp_frame();
        let tuple = flow_tuple(&frame).expect("a 5-tuple");
        let mut m = model(false);
        let mut standby = state(0);
        standby.services[0].standby = true;
        assert_eq!(
            verdict_of(&m.process(&standby, INGRESS, &frame)),
            Verdict::DropStandby
        );
        let mut empty = state(0);
        empty.services[0].table.clear();
        assert_eq!(
            verdict_of(&m.process(&empty, INGRESS, &frame)),
            Verdict::DropNoBackend
        );
        assert_eq!(
            verdict_of(&m.process(&state(5), INGRESS, &frame)),
            Verdict::DropNoBackend
        );
        assert_eq!(m.remembered(&tuple), None);
    }

    /// Where the second fragment of a datagram split for a 1500-byte MTU starts, in 8-byte units.
    const SECOND_FRAGMENT_UNITS: u16 = 185;
    const DATAGRAM_ID: u16 = 4242;

    #[test]
    fn later_fragments_follow_their_first_and_orphans_are_dropped() {
        let first = with_ip_id(&with_fragment(&tcp_frame(), true, 0), DATAGRAM_ID);
        let later = with_fragment(&first, false, SECOND_FRAGMENT_UNITS);
        let orphan = with_ip_id(&later, DATAGRAM_ID + 1);
        let to_other = with_fragment(
            &Ipv4Frame::new(Ipv4Flow::tcp(CLIENT_IP, CLIENT_PORT, OTHER_IP, PORT)).build(),
            false,
            1,
        );
        let mut m = model(true);
        assert_eq!(
            verdict_of(&m.process(&state(0), INGRESS, &orphan)),
            Verdict::DropFragmentOrphan
        );
        assert_eq!(
            m.process(&state(0), INGRESS, &first),
            Outcome::Ran {
                action: XdpAction::Tx,
                verdict: Verdict::Tx,
                output: forwarded_to(&first, 0)
            }
        );
        // The table now names backend 1; the datagram stays with 0.
        assert_eq!(
            m.process(&state(1), INGRESS, &later),
            Outcome::Ran {
                action: XdpAction::Tx,
                verdict: Verdict::Tx,
                output: forwarded_to(&later, 0)
            }
        );
        assert_eq!(
            verdict_of(&m.process(&state(0), INGRESS, &to_other)),
            Verdict::Pass
        );
        let mut replaced = state(0);
        replaced.services[0].id = SERVICE_ID + 1;
        m.state_changed(&state(0), &replaced);
        assert_eq!(
            verdict_of(&m.process(&replaced, INGRESS, &later)),
            Verdict::DropFragment,
            "the first fragment's service instance ended"
        );
    }

    #[test]
    fn echo_requests_to_an_active_vip_are_answered() {
        let request = icmp_echo_request(ROUTER_IP, VIP);
        assert_eq!(
            model(true).process(&state(0), INGRESS, &request),
            Outcome::Ran {
                action: XdpAction::Tx,
                verdict: Verdict::EchoReply,
                output: icmp_echo_reply(ROUTER_IP, VIP),
            }
        );
        assert_eq!(
            verdict_of(&model(true).process(
                &state(0),
                INGRESS,
                &icmp_echo_request(ROUTER_IP, INACTIVE_VIP)
            )),
            Verdict::DropStandby
        );
    }

    #[test]
    fn icmp_errors_about_a_service_flow_go_to_its_backend() {
        let reply = Ipv4Frame::new(Ipv4Flow::tcp(VIP, PORT, CLIENT_IP, CLIENT_PORT)).build();
        let error = icmp_error(
            IcmpError::FragmentationNeeded { next_hop_mtu: 1280 },
            VIP,
            &reply,
            usize::MAX,
        );
        let mut m = model(true);
        assert_eq!(
            m.process(&state(1), INGRESS, &error),
            Outcome::Ran {
                action: XdpAction::Redirect,
                verdict: Verdict::Redirect,
                output: forwarded_to(&error, 1)
            }
        );
        assert_eq!(m.flow_count(), 0, "an ICMP error starts no flow");
    }

    #[test]
    fn other_traffic_to_a_vip_goes_to_the_stack_only_when_the_vip_is_local() {
        let not_a_service_reply =
            Ipv4Frame::new(Ipv4Flow::tcp(VIP, PORT + 1, CLIENT_IP, CLIENT_PORT)).build();
        let ping = icmp_error(IcmpError::PortUnreachable, VIP, &not_a_service_reply, 8);
        let other_port =
            Ipv4Frame::new(Ipv4Flow::tcp(CLIENT_IP, CLIENT_PORT, VIP, PORT + 1)).build();
        let to_other_host = icmp_echo_request(ROUTER_IP, OTHER_IP);
        let mut local = state(0);
        local.local_vips.insert(VIP.into());
        for frame in [&ping, &other_port] {
            assert_eq!(
                verdict_of(&model(true).process(&state(0), INGRESS, frame)),
                Verdict::DropNoService
            );
            assert_eq!(
                verdict_of(&model(true).process(&local, INGRESS, frame)),
                Verdict::Pass
            );
        }
        assert_eq!(
            verdict_of(&model(true).process(&state(0), INGRESS, &to_other_host)),
            Verdict::Pass,
            "not a VIP: the stack's"
        );
        let mut elsewhere = ping.clone();
        elsewhere[ETH_DST].copy_from_slice(&OTHER_HOST_MAC);
        assert_eq!(
            verdict_of(&model(true).process(&state(0), INGRESS, &elsewhere)),
            Verdict::Pass,
            "sent to another MAC: not ours to drop"
        );
    }

    #[test]
    fn arp_for_a_standby_vip_the_kernel_holds_never_reaches_the_kernel() {
        let request = Arp::request(ROUTER_MAC, ROUTER_IP, INACTIVE_VIP).build();
        let mut local = state(0);
        local.local_vips.insert(INACTIVE_VIP.into());
        assert_eq!(
            verdict_of(&model(true).process(&local, INGRESS, &request)),
            Verdict::DropArpStandby
        );
        local.vips.insert(INACTIVE_VIP.into(), true);
        assert_eq!(
            verdict_of(&model(true).process(&local, INGRESS, &request)),
            Verdict::ArpReply,
            "active and local: answered by the program"
        );
    }

    #[test]
    fn arp_request_for_an_active_vip_becomes_the_reply() {
        let request = Arp::request(ROUTER_MAC, ROUTER_IP, VIP).build();
        let reply = Arp::reply(DIRECTOR_MAC, VIP, ROUTER_MAC, ROUTER_IP).build();
        let outcome = model(false).process(&state(0), INGRESS, &request);
        let expected = Outcome::Ran {
            action: XdpAction::Tx,
            verdict: Verdict::ArpReply,
            output: reply,
        };
        assert_eq!(outcome, expected);
        let inactive = Arp::request(ROUTER_MAC, ROUTER_IP, INACTIVE_VIP).build();
        assert_eq!(
            verdict_of(&model(false).process(&state(0), INGRESS, &inactive)),
            Verdict::Pass
        );
        assert_eq!(
            verdict_of(&model(false).process(&state(0), UNKNOWN_IFINDEX, &request)),
            Verdict::Pass,
            "an interface (or VLAN) the director does not serve is not its to answer on"
        );
    }

    #[test]
    fn with_our_dst_mac_required_frames_for_other_macs_pass() {
        let mut unicast_elsewhere = Arp::request(ROUTER_MAC, ROUTER_IP, VIP);
        unicast_elsewhere.eth_dst = OTHER_HOST_MAC;
        let arp = unicast_elsewhere.build();
        let mut tcp = Ipv4Frame::new(Ipv4Flow::tcp(CLIENT_IP, CLIENT_PORT, VIP, PORT));
        tcp.dst_mac = OTHER_HOST_MAC;
        let tcp = tcp.build();
        for frame in [&arp, &tcp] {
            assert_ne!(
                verdict_of(&model(false).process(&state(0), INGRESS, frame)),
                Verdict::Pass
            );
            assert_eq!(
                verdict_of(&model(true).process(&state(0), INGRESS, frame)),
                Verdict::Pass
            );
        }
        let broadcast = Arp::request(ROUTER_MAC, ROUTER_IP, VIP).build();
        assert_eq!(
            verdict_of(&model(true).process(&state(0), INGRESS, &broadcast)),
            Verdict::ArpReply
        );
    }

    /// One IPv6 TCP service on `VIP_IPV6` whose table holds only backend 0.
    fn state_v6() -> State {
        let mut state = state(0);
        state.vips.insert(VIP_IPV6.into(), true);
        state.services[0].vip = VIP_IPV6.into();
        state
    }

    fn tcp6() -> Ipv6Frame {
        Ipv6Frame::new(Ipv6Flow::tcp(CLIENT_IPV6, CLIENT_PORT, VIP_IPV6, PORT))
    }

    #[test]
    fn ipv6_extension_headers_are_walked_up_to_the_bound() {
        let v6 = state_v6();
        let four = tcp6()
            .hop_by_hop()
            .destination_options()
            .routing(true)
            .build();
        assert_eq!(
            model(true).process(&v6, INGRESS, &four),
            Outcome::Ran {
                action: XdpAction::Tx,
                verdict: Verdict::Tx,
                output: forwarded_to(&four, 0),
            }
        );
        let five = tcp6()
            .hop_by_hop()
            .destination_options()
            .routing(true)
            .fragment(0, false, 7)
            .build();
        assert_eq!(
            verdict_of(&model(true).process(&v6, INGRESS, &five)),
            Verdict::DropMalformed
        );
        assert_eq!(
            verdict_of(&model(true).process(&state(0), INGRESS, &five)),
            Verdict::Pass,
            "not a VIP: the stack's"
        );
    }

    #[test]
    fn ipv6_later_fragments_follow_their_first_by_id_alone() {
        let state = state_v6();
        let first = tcp6().fragment(0, true, 9).build();
        let later = tcp6().fragment(SECOND_FRAGMENT_UNITS, false, 9).build();
        let orphan = tcp6().fragment(SECOND_FRAGMENT_UNITS, false, 10).build();
        let mut m = model(true);
        assert_eq!(
            verdict_of(&m.process(&state, INGRESS, &orphan)),
            Verdict::DropFragmentOrphan
        );
        assert_eq!(verdict_of(&m.process(&state, INGRESS, &first)), Verdict::Tx);
        assert_eq!(
            m.process(&state_v6(), INGRESS, &later),
            Outcome::Ran {
                action: XdpAction::Tx,
                verdict: Verdict::Tx,
                output: forwarded_to(&later, 0)
            }
        );
    }

    #[test]
    fn ipv6_echo_requests_are_answered_and_errors_relayed() {
        let state = state_v6();
        assert_eq!(
            model(true).process(&state, INGRESS, &icmpv6_echo_request(CLIENT_IPV6, VIP_IPV6)),
            Outcome::Ran {
                action: XdpAction::Tx,
                verdict: Verdict::EchoReply,
                output: icmpv6_echo_reply(CLIENT_IPV6, VIP_IPV6),
            }
        );
        let reply = Ipv6Frame::new(Ipv6Flow::tcp(VIP_IPV6, PORT, CLIENT_IPV6, CLIENT_PORT)).build();
        let error = icmpv6_error(
            Icmpv6Error::PacketTooBig { mtu: 1280 },
            VIP_IPV6,
            &reply,
            usize::MAX,
        );
        let mut m = model(true);
        assert_eq!(
            m.process(&state, INGRESS, &error),
            Outcome::Ran {
                action: XdpAction::Tx,
                verdict: Verdict::Tx,
                output: forwarded_to(&error, 0)
            }
        );
        assert_eq!(m.flow_count(), 0, "an ICMPv6 error starts no flow");
    }

    #[test]
    fn short_frames_are_refused_and_a_cut_vlan_tag_is_malformed() {
        let tagged = Ipv4Frame::new(Ipv4Flow::tcp(CLIENT_IP, CLIENT_PORT, VIP, PORT))
            .vlan(crate::packet::VLAN_ID)
            .build();
        let mut m = model(false);
        assert_eq!(
            m.process(&state(0), INGRESS, &tagged[..ETH_HEADER_LEN - 1]),
            Outcome::Refused
        );
        assert_eq!(
            verdict_of(&m.process(&state(0), INGRESS, &tagged[..ETH_HEADER_LEN + 2])),
            Verdict::DropMalformed
        );
        // A whole tagged frame is on a VLAN the (untagged) director does not serve.
        assert_eq!(
            verdict_of(&m.process(&state(0), INGRESS, &tagged)),
            Verdict::Pass
        );
    }
}
